"""The set-up commands the README and the guide give a GPU user make .venv use
the CUDA build (issue 26, item 1): what scripts/setup.sh does with each flag
is checked by running it over stand-ins of the Caffe build and of pip, so no
compile is needed, and the documented commands are checked against that."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import ROOT, write

USER_DOCS = ("README.md", "docs/REPRODUCE.md")

BUILD_STUB = """#!/usr/bin/env bash
# Stand-in of engine/build_caffe.sh: prints the prefix of the variant asked for.
case " $* " in *" --cuda "*) echo /stub/cuda ;; *) echo /stub/cpu ;; esac
"""
PYCAFFE_STUB = """#!/usr/bin/env bash
# Stand-in of engine/build_pycaffe.sh: prints where pycaffe for --prefix goes.
while [ $# -gt 0 ]; do [ "$1" = --prefix ] && prefix=$2; shift; done
echo "$prefix/pycaffe"
"""
PYTHON_STUB = """#!/usr/bin/env bash
# Stand-in of .venv/bin/python: pip installs nothing (but makes --target's
# folders), and the site-packages folder is the test's.
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
  args=("$@")
  for i in "${!args[@]}"; do
    [ "${args[$i]}" = "--target" ] && mkdir -p "${args[$((i + 1))]}/nvidia/cu13/lib"
  done
  exit 0
fi
[ "$1" = "-c" ] && { echo "SITE"; exit 0; }
exit 1
"""


def setup_tree(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of setup.sh with the build and pip replaced by stand-ins."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup.sh", root / "scripts" / "setup.sh")
    (root / "engine").mkdir()
    shutil.copy(ROOT / "engine" / "pins.sh", root / "engine" / "pins.sh")
    for name in ("requirements.txt", "pyproject.toml"):
        shutil.copy(ROOT / name, root / name)
    write(root / "engine" / "build_caffe.sh", BUILD_STUB).chmod(0o755)
    write(root / "engine" / "build_pycaffe.sh", PYCAFFE_STUB).chmod(0o755)
    site = tmp_path / "site"
    site.mkdir()
    write(root / ".venv" / "bin" / "python", PYTHON_STUB.replace("SITE", str(site))).chmod(0o755)
    return root, site


def engine_used(tmp_path: Path, *flags: str) -> str:
    """The Caffe prefix .venv imports after ``setup.sh FLAGS``."""
    root, site = setup_tree(tmp_path)
    done = subprocess.run(["bash", "scripts/setup.sh", *flags], cwd=root, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return (site / "caffe_engine.pth").read_text().strip()


@pytest.mark.parametrize("flags, prefix", [((), "/stub/cpu"), (("--use-cuda",), "/stub/cuda"),
                                           (("--cuda",), "/stub/cpu")])
def test_which_build_each_set_up_gives_venv(tmp_path, flags, prefix):
    """--use-cuda gives .venv the CUDA build; --cuda only builds it beside
    the CPU one (the negative case: a GPU user's command it must not be)."""
    assert engine_used(tmp_path, *flags) == f"{prefix}/pycaffe"


def documented_setup_commands() -> list[tuple[str, str]]:
    """(file, command) for every scripts/setup.sh run in a code block of the
    pages a new user reads."""
    found = []
    for name in USER_DOCS:
        for block in re.findall(r"^```[^\n]*\n(.*?)^```", (ROOT / name).read_text(), re.M | re.S):
            found += [(name, line.split("#")[0].strip()) for line in block.splitlines() if "scripts/setup.sh" in line]
    return found


def test_the_documented_gpu_set_up_is_the_cuda_build(tmp_path):
    commands = documented_setup_commands()
    cuda = [(name, c) for name, c in commands if "cuda" in c]
    assert {name for name, _ in cuda} == set(USER_DOCS), "each page gives the GPU set-up"
    for name, command in cuda:
        flags = tuple(command.split()[2:])
        assert engine_used(tmp_path / str(len(flags)) / name.replace("/", "_"), *flags) == "/stub/cuda/pycaffe", \
            f"{name}: `{command}` leaves .venv on the CPU build"
    # Every GPU command in these pages runs on that set-up, never on a CPU build.
    for name in USER_DOCS:
        text = (ROOT / name).read_text()
        assert "--gpu" not in text or "--use-cuda" in text, name
