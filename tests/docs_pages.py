"""The documentation's Markdown pages (``docs/``) and the README, for the tests that check what they say."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"


def pages() -> dict[str, str]:
    """``{path relative to docs/: text}`` for every Markdown page of the site."""
    return {path.relative_to(DOCS).as_posix(): path.read_text() for path in sorted(DOCS.rglob("*.md"))}


def page(name: str) -> str:
    """The text of one page, e.g. ``page("results/index.md")``."""
    return (DOCS / name).read_text()


def region(kind: str, name: str, block: str) -> str:
    """A generated region as it must read on its page."""
    return f"<!-- {kind}:{name} -->\n{block}<!-- /{kind}:{name} -->"


def pages_holding(text: str) -> list[str]:
    """The pages whose text contains ``text``."""
    return [name for name, body in pages().items() if text in body]
