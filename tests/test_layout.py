"""The library's layout holds: each sub-package imports only the stages
before it, the library imports no entry points, and the data layers'
param_str JSON has one owner. Imports are read with ast, not by importing."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT

LIBRARY = ROOT / "deconvnet"
# What each sub-package may import besides itself (deconvnet/__init__.py).
ALLOWED = {
    "common": set(),
    "data": {"common"},
    "net": {"common", "data"},
    "eval": {"common", "data"},
    "train": {"common", "data", "net", "eval"},
    "infer": {"common", "data", "net"},
    "bench": {"common", "data", "net"},
    "visualize": {"common", "data", "net", "infer"},
}
ENTRY_POINTS = ("tools", "data_prep", "experiments", "tests")


def imported_modules(path: Path, package: str | None = None) -> list[str]:
    """Absolute names of what ``path`` imports; relative imports are resolved
    from ``package`` (default: the file's own, from its place under ROOT)."""
    if package is None:
        package = ".".join(path.relative_to(ROOT).parent.parts)
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.append(module)
            if module in ("deconvnet", f"deconvnet.{module.split('.')[-1]}") or node.module is None:
                names += [f"{module}.{alias.name}" for alias in node.names]  # from deconvnet import data
    return names


def violations(package: str, path: Path, module_package: str | None = None) -> list[str]:
    """The imports of ``path`` that deconvnet.<package> may not make."""
    found = []
    for module in imported_modules(path, module_package):
        parts = module.split(".")
        if parts[0] in ENTRY_POINTS:
            found.append(f"{path} imports the entry point {module}")
        elif parts[0] == "deconvnet" and len(parts) > 1 and parts[1] != package \
                and parts[1] not in ALLOWED[package]:
            found.append(f"{path} imports {module}: deconvnet.{package} may import only "
                         f"{sorted(ALLOWED[package]) or 'nothing of ours'}")
    return found


def library_modules() -> list[tuple[str, Path]]:
    """(sub-package, file) for every module under deconvnet/<sub-package>/."""
    return [(path.relative_to(LIBRARY).parts[0], path) for path in sorted(LIBRARY.glob("*/*.py"))]


def test_every_sub_package_is_known_and_documented():
    found = {p.name for p in LIBRARY.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert found == set(ALLOWED)
    top = (LIBRARY / "__init__.py").read_text()
    for package in ALLOWED:
        docstring = ast.get_docstring(ast.parse((LIBRARY / package / "__init__.py").read_text()))
        assert docstring and "May import" in docstring, f"deconvnet/{package}/__init__.py"
        assert f"``{package}``" in top
    assert not list(LIBRARY.glob("[!_]*.py")), "modules belong in a sub-package"


@pytest.mark.parametrize("package,path", library_modules(), ids=lambda v: str(v).split("deconvnet/")[-1])
def test_imports_run_one_way(package, path):
    assert violations(package, path) == []


def test_checker_catches_a_wrong_import(tmp_path):
    """The check above can fail: a data module importing train, absolutely,
    relatively or as a package, and an entry point, is caught."""
    for line in ("from deconvnet.train.trainer import Trainer", "from ..train import trainer",
                 "from ..train.trainer import Trainer", "from .. import train", "import tools.demo"):
        bad = tmp_path / "bad.py"
        bad.write_text(line + "\n")
        assert violations("data", bad, "deconvnet.data"), line
    good = tmp_path / "good.py"
    good.write_text("from .voc import read_split\nfrom ..common import constants\n")
    assert violations("data", good, "deconvnet.data") == []


def test_each_sub_package_docstring_lists_its_modules():
    for package in ALLOWED:
        docstring = ast.get_docstring(ast.parse((LIBRARY / package / "__init__.py").read_text())) or ""
        missing = [p.stem for p in (LIBRARY / package).glob("[!_]*.py") if f"``{p.stem}``" not in docstring]
        assert missing == [], f"deconvnet/{package}/__init__.py does not list {missing}"


def test_no_pointer_outside_the_repository():
    """Docs and docstrings cite docs/PAPER.md, not the spec beside the clone."""
    for pattern in ("SPEC" + " section", "shared/" + "SPEC"):
        hits = subprocess.run(["git", "grep", "-n", pattern], cwd=ROOT, capture_output=True, text=True)
        assert hits.stdout == "", hits.stdout
    assert (ROOT / "docs" / "PAPER.md").is_file()


def test_param_str_json_has_one_owner():
    """Outside deconvnet/data/layer_params.py, no library, layer, tool or
    data_prep module both imports json and handles a param_str. (The numpy
    Unpooling baseline layer reads its own, not a data layer's.)"""
    own_json = {"layer_params.py", "unpooling.py"}
    offenders = []
    for folder in ("deconvnet", "python_layers", "tools", "data_prep"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name not in own_json and "param_str" in path.read_text() \
                    and "json" in imported_modules(path):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


ENTRY_SCRIPTS = sorted(p.relative_to(ROOT) for folder in ("tools", "tools/benchmarks", "data_prep")
                       for p in (ROOT / folder).glob("*.py"))


BENCH_MODULES = sorted(f"deconvnet.bench.{p.stem}" for p in (LIBRARY / "bench").glob("[!_]*.py"))


@pytest.mark.parametrize("script", ENTRY_SCRIPTS + BENCH_MODULES, ids=str)
def test_every_entry_point_answers_help(script):
    """Each tool imports what it needs from the new layout and documents itself."""
    command = ["-m", script] if str(script).startswith("deconvnet.") else [str(ROOT / script)]
    shown = subprocess.run([sys.executable, *command, "--help"], capture_output=True, text=True,
                           timeout=120, cwd="/")
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shown.stdout.startswith("usage:") and len(shown.stdout.splitlines()) > 3


def test_the_readme_is_a_first_screen_with_the_two_commands():
    """Issue 26, item 11: what this is, the two commands and what they make,
    at most 15,000 characters; the reference lives in docs/, linked."""
    text = (ROOT / "README.md").read_text()
    assert len(text) <= 15_000, len(text)
    first_screen = "\n".join(text.splitlines()[:40])
    assert "bash scripts/demo.sh" in first_screen and "bash scripts/test.sh" in first_screen
    assert "report.md" in text and "docs/REPRODUCE.md" in text
    for page in re.findall(r"`(docs/[A-Z]+\.md)`", text):
        assert (ROOT / page).is_file(), page
    assert {"docs/USAGE.md", "docs/ENGINE.md"} <= set(re.findall(r"`(docs/[A-Z]+\.md)`", text))
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("bash scripts/test.sh")
