"""MkDocs hooks for the hf-poscuda site (``mkdocs.yml`` names this file under ``hooks:``).

Three jobs, so that nothing on the site is copied by hand:

- **Figures**: the result plots live once in git, under ``examples/results/`` beside the runs they were drawn
  from. They are added to the site at build time, and a page links them by their path in the repository
  (``../examples/results/...`` from ``docs/``), which also works when the page is read on a git host.
- **CLI reference**: a page holding ``<!-- cli-reference: MODULE:ATTRIBUTE -->`` gets, in its place, the reference
  of that typer app: usage, arguments, options with their defaults and help, and the examples of each command, read
  from the app itself (``typer.main.get_command``).
- **Knobs**: ``<!-- config-knobs: MODULE:CLASS -->`` becomes a table of every field of that dataclass: its default
  (from the dataclass) and what it does (from the ``Args:`` section of its docstring).
"""

from __future__ import annotations

import importlib
import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
#: Folders of the repository (outside ``docs/``) whose images the pages may show.
FIGURE_DIRS = ("examples/results",)
FIGURE_SUFFIXES = (".png", ".svg")
CLI_MARKER = re.compile(r"^<!-- cli-reference: ([\w.]+):(\w+) -->$", re.M)
KNOBS_MARKER = re.compile(r"^<!-- config-knobs: ([\w.]+):(\w+) -->$", re.M)
LINK = re.compile(r"(\]\()([^)\s]+)(\))")


def on_files(files: Files, config: Any) -> Files:
    """Add every figure under :data:`FIGURE_DIRS` to the site at its path in the repository."""
    for folder in FIGURE_DIRS:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in FIGURE_SUFFIXES and path.is_file():
                uri = path.relative_to(ROOT).as_posix()
                files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Point repository-relative figure links at the figures added by :func:`on_files`, and render the CLI."""
    page_dir = posixpath.dirname(page.file.src_uri)
    docs_dir = Path(config["docs_dir"]).resolve()

    def relink(match: re.Match[str]) -> str:
        target = match.group(2)
        if "://" in target or target.startswith(("#", "/")):
            return match.group(0)
        real = (docs_dir / page_dir / target).resolve()
        try:
            uri = real.relative_to(ROOT).as_posix()
        except ValueError:
            return match.group(0)
        if real.is_relative_to(docs_dir) or files.get_file_from_path(uri) is None:
            return match.group(0)  # a page of the site, or not a figure: MkDocs validates it as usual
        return match.group(1) + posixpath.relpath(uri, page_dir or ".") + match.group(3)

    markdown = LINK.sub(relink, markdown)
    markdown = KNOBS_MARKER.sub(lambda m: knob_table(m.group(1), m.group(2)), markdown)
    return CLI_MARKER.sub(lambda m: cli_reference(m.group(1), m.group(2)), markdown)


# ----------------------------------------------------------------------------------------------- knob table
def knob_table(module: str, name: str) -> str:
    """Markdown table of every field of the dataclass ``module.name``: default and its ``Args:`` description."""
    import dataclasses
    import inspect

    cls = getattr(importlib.import_module(module), name)
    described = _args_section(inspect.getdoc(cls) or "")
    rows = ["| knob | default | what it does |", "|---|---|---|"]
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        if field.name not in described:
            raise ValueError(f"{name}.{field.name} is not described in the Args: section of {name}'s docstring")
        if field.default is not dataclasses.MISSING:
            default = f"`{field.default!r}`"
        elif field.default_factory is not dataclasses.MISSING:
            default = f"`{field.default_factory()!r}`"
        else:
            default = "required"
        rows.append(f"| `{field.name}` | {default} | {_cell(_rst_to_md(described[field.name]))} |")
    return "\n".join(rows) + "\n"


def _args_section(doc: str) -> dict[str, str]:
    """``{name: description}`` from a Google/HF-style ``Args:`` section (the type in parentheses dropped)."""
    found: dict[str, str] = {}
    match = re.search(r"^Args:\n((?:[ \t]+.*\n?|\n)+)", doc, re.M)
    if match is None:
        return found
    current = None
    for line in match.group(1).splitlines():
        item = re.match(r"^    (\w+)(?: \((.*?)\))?: (.*)$", line)
        if item:
            current = item.group(1)
            found[current] = item.group(3)
        elif current and line.startswith("        "):
            found[current] += " " + line.strip()
    return found


def _rst_to_md(text: str) -> str:
    """Docstring markup to Markdown: ``code`` to `code`, :role:`x` to `x`."""
    return re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text.replace("``", "`"))


# ----------------------------------------------------------------------------------------------- CLI reference
def cli_reference(module: str, attribute: str) -> str:
    """Markdown reference of the typer app ``module.attribute``: one section per command, in the app's order.

    It reads what ``--help`` prints (usage line, help text, each parameter's help record with its default and
    range) from the command typer builds, so the page says what the installed CLI says.
    """
    import typer

    app = getattr(importlib.import_module(module), attribute)
    group = typer.main.get_command(app)
    name = app.info.name or group.name or attribute
    ctx = group.context_class(group, info_name=name)
    names = [n for n in group.list_commands(ctx) if not group.get_command(ctx, n).hidden]
    parts = [_command_section(group, ctx, name, name)]
    parts.append("Commands: " + ", ".join(f"[`{n}`](#{_anchor(f'{name} {n}')})" for n in names) + "\n")
    for command_name in names:
        command = group.get_command(ctx, command_name)
        sub = command.context_class(command, info_name=command_name, parent=ctx)
        parts.append(_command_section(command, sub, f"{name} {command_name}", name))
    return "\n".join(parts)


def _command_section(command: Any, ctx: Any, title: str, prog: str) -> str:
    """One command: heading, help, usage, a table of its parameters' help records, its examples."""
    lines = [f"## `{title}`", ""]
    if command.help:
        lines += [_plain(command.help), ""]
    lines += ["```text", command.get_usage(ctx), "```", ""]
    records = [r for r in (p.get_help_record(ctx) for p in command.get_params(ctx)) if r is not None]
    records = [r for r in records if not r[0].startswith("--help")]
    if records:
        lines += ["| argument or option | description |", "|---|---|"]
        lines += [f"| `{_cell(names)}` | {_cell(help_text)} |" for names, help_text in records]
        lines.append("")
    if command.epilog:
        lines += _epilog(command.epilog, prog)
    return "\n".join(lines)


def _epilog(text: str, prog: str) -> list[str]:
    """An epilog's example command lines (those starting with ``prog``) as a shell block; its other lines as text."""
    commands, prose = [], []
    for line in text.splitlines():
        stripped = line.strip().removeprefix("Examples:").removeprefix("Example:").strip()
        if stripped.startswith(prog + " "):
            commands.append(stripped)
        elif stripped:
            prose.append(stripped)
    lines = [" ".join(prose), ""] if prose else []
    if commands:
        lines += ["Example" + ("s" if len(commands) > 1 else "") + ":", "", "```bash", *commands, "```", ""]
    return lines


def _plain(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", text.strip())


def _cell(text: str) -> str:
    return _plain(text).replace("|", "\\|")


def _anchor(title: str) -> str:
    """The id MkDocs' ``toc`` extension gives the heading `` `title` ``."""
    return re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", title.lower())).strip("-")
