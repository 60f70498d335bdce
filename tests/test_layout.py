"""The library's layout holds: each sub-package imports only the stages
before it, the library imports no entry points, and the data layers'
param_str JSON has one owner. Imports are read with ast, not by importing."""
from __future__ import annotations

import ast
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
}
ENTRY_POINTS = ("tools", "data_prep", "experiments", "tests")


def imported_modules(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
            if node.module == "deconvnet":  # from deconvnet import data
                names += [f"deconvnet.{alias.name}" for alias in node.names]
    return names


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
    for module in imported_modules(path):
        parts = module.split(".")
        assert parts[0] not in ENTRY_POINTS, f"{path} imports the entry point {module}"
        if parts[0] == "deconvnet" and len(parts) > 1 and parts[1] != package:
            assert parts[1] in ALLOWED[package], (
                f"{path.relative_to(ROOT)} imports {module}: deconvnet.{package} may import only "
                f"{sorted(ALLOWED[package]) or 'nothing of ours'}")


def test_checker_catches_a_wrong_import(tmp_path):
    """The check above can fail: a data module importing train is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("from deconvnet.train.trainer import Trainer\nimport tools.demo\n")
    modules = imported_modules(bad)
    assert "deconvnet.train.trainer" in modules and "tools.demo" in modules
    assert "train" not in ALLOWED["data"]


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


@pytest.mark.parametrize("script", ENTRY_SCRIPTS, ids=str)
def test_every_entry_point_answers_help(script):
    """Each tool imports what it needs from the new layout and documents itself."""
    shown = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True,
                           timeout=120, cwd="/")
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shown.stdout.startswith("usage:") and len(shown.stdout.splitlines()) > 3
