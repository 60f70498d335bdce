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
    recipe_tools = ("data_prep/build_dataset.py", "tools/train.py", "tools/infer.py", "tools/proposal_recall.py")
    assert not any("--recipe" in c for c in release)  # the release recipe is every tool's default
    for command in commands(dry_run("--recipe", "paper")):
        if command[1] in recipe_tools:
            assert command[command.index("--recipe") + 1] == "paper", command
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
        assert flag(command, "--model") == flag(fold, "--out-model")


GUIDE = ROOT / "docs" / "REPRODUCE.md"


def guide_steps(text: str) -> dict[int, list[str]]:
    """Step number -> the commands of its plain ``sh`` blocks (the ones the
    guide says reproduce.sh runs), continuation lines joined."""
    steps: dict[int, list[str]] = {}
    for number, body in re.findall(r"^## (\d+)\. [^\n]*\n(.*?)(?=^## |\Z)", text, re.M | re.S):
        for block in re.findall(r"^```sh\n(.*?)^```", body, re.M | re.S):
            joined = block.replace("\\\n", " ")
            steps.setdefault(int(number), []).extend(
                " ".join(line.split("  #")[0].split()) for line in joined.splitlines() if line.strip())
    return steps


def script_steps(lines: list[str]) -> dict[int, list[str]]:
    steps: dict[int, list[str]] = {}
    current = 0
    for line in lines:
        started = re.match(r"== step (\d+):", line)
        if started:
            current = int(started.group(1))
        elif line.startswith("+ "):
            words = line[2:].split()
            steps.setdefault(current, []).append(" ".join(["python", *words[1:]]))
    return steps


def test_the_guide_prints_what_the_script_runs():
    """Steps 1 to 9: the guide's sh blocks are the script's --dry-run, command
    for command, in order (the test-server step with the guide's folder)."""
    script = script_steps(dry_run("--test-images", "data/VOC2012_test/JPEGImages"))
    guide = guide_steps(GUIDE.read_text())
    assert sorted(guide) == [1, 2, 3, 4, 5, 7, 8, 9] and 6 not in script  # step 6 runs nothing
    for step in range(1, 10):
        assert guide.get(step, []) == script.get(step, []), f"step {step}"


def test_a_guide_that_drifts_from_the_script_is_caught():
    text = GUIDE.read_text()
    drifted = text.replace("--batches 500", "--batches 50", 1)
    assert drifted != text
    script = script_steps(dry_run())
    assert guide_steps(drifted)[5] != script[5]
    optional = text.replace("```sh\npython tools/bn_stats.py", "```sh optional\npython tools/bn_stats.py", 1)
    assert optional != text and guide_steps(optional).get(5) != script[5]


def test_the_rehearsal_runs_the_guide_with_its_overrides_only():
    """--rehearsal runs the same commands with the paths under its folder and
    the logged overrides appended, and no --gpu."""
    plain = script_steps(dry_run("--test-images", "data/VOC2012_test/JPEGImages"))
    rehearsal = script_steps(dry_run("--rehearsal", "/r"))
    assert rehearsal[0] == ["python tools/rehearsal_inputs.py /r"] and 1 not in rehearsal
    overrides = {"tools/train.py": " --max-iter 2", "tools/bn_stats.py": " --batches 2",
                 "tools/eval_voc.py": " --list /r/rehearsal_val.txt"}
    for step in range(2, 10):
        expected = []
        for command in plain.get(step, []):
            moved = re.sub(r"(?<= )(data|models|runs|output)/", r"/r/\1/",
                           command.replace(" --gpu 0", "").replace("--workers 8", "--workers 2")
                           .replace("snapshot_iter_40000", "snapshot_iter_2"))
            moved = moved.replace("prototxt/", "/r/prototxt/")
            tool = command.split()[1]
            if tool == "tools/infer.py":
                moved += " --top-k 3" + ("" if "--voc-submission" in command else " --list /r/rehearsal_val.txt")
            if tool in ("tools/infer.py", "tools/proposal_recall.py") or "--stage 2" in command:
                moved += " --edge-model /r/models/sed_model.yml.gz"
            expected.append(moved + overrides.get(tool, ""))
        if step == 4:
            expected.insert(0, "python tools/make_prototxt.py --out /r/prototxt --root /r --batch-per-pass 2 "
                               "--iter-size 1")
        assert rehearsal.get(step, []) == expected, f"step {step}"
