"""experiments/reproduce.sh --dry-run: every step's command names a tool
that exists, and every flag it passes is one that tool's --help lists."""
from __future__ import annotations

import re
import subprocess
import sys

from helpers import ROOT

SCRIPT = ROOT / "experiments" / "reproduce.sh"


def dry_run(*args: str) -> list[str]:
    out = subprocess.run(["bash", str(SCRIPT), "--dry-run", *args], capture_output=True, text=True, timeout=60,
                         cwd="/")
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def commands(lines: list[str]) -> list[list[str]]:
    return [line[2:].split() for line in lines if line.startswith("+ ")]


def test_every_step_runs_a_tool_with_flags_it_knows():
    lines = dry_run("--test-images", "data/VOC2012_test/JPEGImages")
    steps = [int(m.group(1)) for m in map(re.compile(r"== step (\d+):").match, lines) if m]
    assert steps == list(range(1, 10))
    helps: dict[str, str] = {}
    for command in commands(lines):
        script = command[1]
        assert (ROOT / script).is_file(), f"{script} does not exist"
        if script not in helps:
            shown = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True,
                                   text=True, timeout=120, cwd=ROOT)
            assert shown.returncode == 0, shown.stderr
            helps[script] = shown.stdout
        for flag in (a for a in command[2:] if a.startswith("--")):
            assert re.search(rf"(^|[\s,\[]){re.escape(flag)}\b", helps[script], re.M), \
                f"{script} has no {flag}"
    assert len(helps) == 11  # every tool of the recipe


def test_a_flag_the_tool_lacks_is_caught():
    """The check above can fail: train.py's help has no --resume."""
    shown = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), "--help"], capture_output=True,
                           text=True, timeout=120, cwd=ROOT).stdout
    assert "--lr-policy" in shown and not re.search(r"(^|[\s,\[])--resume\b", shown, re.M)


def test_step_range_and_bad_arguments():
    only = commands(dry_run("--from", "4", "--to", "5"))
    assert [c[1] for c in only] == ["tools/train.py", "tools/plot_training.py", "tools/bn_stats.py",
                                    "tools/fold_bn.py"]
    assert "--lr-policy plateau" in " ".join(commands(dry_run("--from", "4", "--to", "4", "--lr-policy",
                                                              "plateau"))[0])
    bad = subprocess.run(["bash", str(SCRIPT), "--nonsense"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown argument" in bad.stderr


def test_recipes_reach_every_step():
    release = commands(dry_run())
    for command in release:
        if command[1] in ("data_prep/build_dataset.py", "tools/train.py", "tools/infer.py", "tools/proposal_recall.py"):
            assert command[command.index("--recipe") + 1] == "release", command
    assert not any("--ensemble" in c or "fcn8s-heavy-pascal.caffemodel" in " ".join(c) for c in release)
    paper = commands(dry_run("--recipe", "paper", "--from", "4", "--to", "4"))
    assert [c[1] for c in paper][:2] == ["tools/make_prototxt.py", "tools/train.py"]
    train = paper[1]
    assert train[train.index("--solver1") + 1] == "prototxt/paper/stage1_solver.prototxt"
    assert train[train.index("--recipe") + 1] == "paper"


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_inference_runs_the_model_step_5_folds():
    """Step 5 folds the statistics' model; steps 7 and 9 infer with that
    caffemodel and the committed folded prototxt, never the unfolded pair."""
    steps = commands(dry_run("--from", "5", "--test-images", "data/VOC2012_test/JPEGImages"))
    stats, fold = steps[0], steps[1]
    assert fold[1] == "tools/fold_bn.py" and flag(fold, "--weights") == flag(stats, "--out")
    infers = [c for c in steps if c[1] == "tools/infer.py"]
    assert len(infers) == 4
    for command in infers:
        assert flag(command, "--weights") == flag(fold, "--out-weights")
        assert flag(command, "--model") == "prototxt/deconvnet_deploy_folded.prototxt"
    assert (ROOT / "prototxt" / "deconvnet_deploy_folded.prototxt").is_file()
