"""Rewrite the generated regions of the documentation: ``<!-- KIND:NAME -->`` ... ``<!-- /KIND:NAME -->``.

The result scripts (``efficacy_sweep.py --report``, ``finetune_threat.py report``, ``verify_rates.py``,
``status.py``) make their tables from the committed records and hand them to :func:`rewrite_regions` with the files or
folders given by ``--docs``; the tests compare each region with what the script makes now. A region may sit on any
page, so moving a table between pages needs no change here.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

#: A block is its text, or a function of the file it goes into (for links relative to that file).
Block = str | Callable[[Path], str]


def add_docs_option(parser: argparse.ArgumentParser) -> None:
    """``--docs PATH ...``: the files or folders whose marked regions are rewritten (``--readme`` is its old name)."""
    parser.add_argument("--docs", "--readme", dest="docs", type=Path, nargs="+", action="extend", default=[],
                        metavar="PATH", help="rewrite the marked regions in these Markdown files or folders "
                        "(every .md under a folder), e.g. --docs docs")


def markdown_files(targets: Iterable[Path]) -> list[Path]:
    """The Markdown files named by ``targets``: files as given, folders searched recursively for ``*.md``."""
    found: list[Path] = []
    for target in targets:
        if target.is_dir():
            found += sorted(target.rglob("*.md"))
        elif target.is_file():
            found.append(target)
        else:
            raise FileNotFoundError(f"{target} is neither a Markdown file nor a folder: pass --docs docs")
    return found


def region(kind: str, name: str) -> re.Pattern[str]:
    """The regex of one marked region; group 1 is the opening marker line, group 2 the closing marker."""
    tag = f"{re.escape(kind)}:{re.escape(name)}"
    return re.compile(rf"(<!-- {tag} -->\n).*?(<!-- /{tag} -->)", re.S)


def marked(kind: str, name: str, block: str) -> str:
    """The region as it must read: markers around ``block``."""
    return f"<!-- {kind}:{name} -->\n{block}<!-- /{kind}:{name} -->"


def rewrite_regions(targets: Iterable[Path], kind: str, blocks: Mapping[str, Block]) -> dict[str, list[Path]]:
    """Replace every ``KIND:NAME`` region in the Markdown files of ``targets`` with ``blocks[NAME]``.

    Returns, per name, the files it was written to. Raises ``ValueError`` when a name has no region in any of the
    files (a table would silently stop being updated), naming the files searched.
    """
    files = markdown_files(targets)
    written: dict[str, list[Path]] = {name: [] for name in blocks}
    for path in files:
        text = original = path.read_text()
        for name, block in blocks.items():
            pattern = region(kind, name)
            if pattern.search(text):
                body = block(path) if callable(block) else block
                text = pattern.sub(lambda m, b=body: m.group(1) + b + m.group(2), text)
                written[name].append(path)
        if text != original:
            path.write_text(text)
    missing = [name for name, paths in written.items() if not paths]
    if files and missing:
        raise ValueError(f"no <!-- {kind}:NAME --> region for {', '.join(missing)} in {', '.join(map(str, files))}: "
                         "the tables live in the docs pages (pass --docs docs)")
    return written
