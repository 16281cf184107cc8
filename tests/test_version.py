"""One source for the version (``hf_poscuda/_version.py``), and no module of the package reads
``hf_poscuda/__init__.py`` while the package is still importing."""

from __future__ import annotations

import ast
import importlib.metadata
import tomllib
from pathlib import Path

import hf_poscuda
from hf_poscuda import _version

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hf_poscuda"


def test_the_version_is_written_once():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["hatch"]["version"]["path"] == "hf_poscuda/_version.py"
    assert hf_poscuda.__version__ == _version.__version__ == importlib.metadata.version("hf-poscuda")


def _module_name(path: Path) -> tuple[str, bool]:
    """Dotted name of a source file and whether it is a package's ``__init__``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _root_imports(path: Path) -> list[str]:
    """``from hf_poscuda import NAME`` (absolute or relative, anywhere in the file) where NAME is not a submodule:
    such a name comes from ``hf_poscuda/__init__.py``, which may not have defined it yet."""
    name, is_package = _module_name(path)
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "hf_poscuda":
                found += [f"{path.relative_to(ROOT)}:{node.lineno}: {a.name}" for a in node.names
                          if not (PACKAGE / f"{a.name}.py").is_file() and not (PACKAGE / a.name).is_dir()]
        elif isinstance(node, ast.Import):
            found += [f"{path.relative_to(ROOT)}:{node.lineno}: import {a.name}" for a in node.names
                      if a.name == "hf_poscuda"]
    return found


def test_no_module_reads_the_package_root():
    """``from . import __version__`` in ``card.py`` worked only because ``__init__`` set the version before
    importing anything: read it from ``hf_poscuda._version`` instead (and anything else from its own module)."""
    offenders = [hit for path in sorted(PACKAGE.rglob("*.py")) if path != PACKAGE / "__init__.py"
                 for hit in _root_imports(path)]
    assert offenders == [], "import these from their own modules, not from hf_poscuda:\n" + "\n".join(offenders)


def test_the_check_finds_a_root_import(tmp_path, monkeypatch):
    """The scan above is not vacuous: it flags the pattern it forbids, and lets submodule imports through."""
    fake = PACKAGE / "hub" / "record.py"
    source = "from .. import __version__\nfrom .. import key\nfrom . import plan\nimport hf_poscuda\n"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: source)
    hits = _root_imports(fake)
    assert [h.rsplit(": ", 1)[1] for h in hits] == ["__version__", "import hf_poscuda"]
