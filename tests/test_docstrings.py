"""Every ``Example:`` block in the package's docstrings runs and prints what it shows (HF-style ```py fences)."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import re
import shutil

import pytest

import hf_poscuda

FENCE = re.compile(r"```py\n(.*?)```", re.S)

#: Examples that need a system tool (``.ci/setup`` installs each): module prefix -> the tool's command.
NEEDS_TOOL = {"hf_poscuda.evaluation.corpus": "espeak-ng"}


def _examples() -> list[tuple[str, str]]:
    found = []
    for info in pkgutil.walk_packages(hf_poscuda.__path__, "hf_poscuda."):
        if ".metrics." in info.name or info.name.endswith("cli"):
            continue
        module = importlib.import_module(info.name)
        objects = [module, *(obj for _, obj in inspect.getmembers(module) if getattr(obj, "__module__", None) == info.name)]
        for obj in objects:
            members = [obj, *(m for _, m in inspect.getmembers(obj, inspect.isfunction))] if inspect.isclass(obj) else [obj]
            for member in members:
                for i, block in enumerate(FENCE.findall(inspect.getdoc(member) or "")):
                    found.append((f"{info.name}.{getattr(member, '__qualname__', info.name)}#{i}", block))
    return sorted(dict(found).items())


EXAMPLES = _examples()


def test_there_are_examples_to_run():
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("name, block", EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_docstring_example_runs(name, block):
    for prefix, tool in NEEDS_TOOL.items():
        if name.startswith(prefix) and shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (.ci/setup installs it)")
    test = doctest.DocTestParser().get_doctest(block, {}, name, None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.failures == 0, f"{name} failed (see the captured output)"
