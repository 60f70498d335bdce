"""Solver files checked before Caffe reads them. Caffe and protobuf report a
typo as a traceback (``base_lrr``), an abort (``lr_policy: "stpe"``, exit
134) or ``Check failed: fd != -1`` (a net path that does not exist), none of
which names the line; here each names the file, the line and the fix."""
from __future__ import annotations

import difflib
import re
from pathlib import Path

from google.protobuf import text_format

from deconvnet.common.cli import ToolError

from caffe.proto import caffe_pb2

# The learning-rate policies of Caffe's SGDSolver::GetLearningRate.
LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")
NET_FIELDS = ("net", "train_net", "test_net")


class SolverError(ToolError):
    """A solver file that Caffe would refuse; the message names the line."""


def _line_of(text: str, field: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if re.match(rf"\s*{field}\s*:", line):
            return number
    return 0


def _suggest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_solver(path: Path) -> caffe_pb2.SolverParameter:
    """The parsed solver file; SolverError for an unreadable file, an
    unknown field or value, an unknown lr_policy or a net file that does
    not exist (net paths are taken relative to the solver's folder)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise SolverError(f"cannot read the solver {path}: {err.strerror}") from err
    param = caffe_pb2.SolverParameter()
    try:
        text_format.Parse(text, param)
    except text_format.ParseError as err:
        where = f"{path}:{err.GetLine()}" if err.GetLine() else str(path)
        detail = str(err).split(" : ", 1)[-1]
        unknown = re.search(r'has no field named "(\w+)"', detail)
        hint = _suggest(unknown.group(1), list(param.DESCRIPTOR.fields_by_name)) if unknown else ""
        raise SolverError(f"{where}: {detail}{hint} (caffe.proto's SolverParameter lists the fields)") from None
    if param.HasField("lr_policy") and param.lr_policy not in LR_POLICIES:
        raise SolverError(f"{path}:{_line_of(text, 'lr_policy')}: lr_policy {param.lr_policy!r} is not one of "
                          f"{', '.join(LR_POLICIES)}{_suggest(param.lr_policy, LR_POLICIES)}")
    if param.lr_policy == "step" and param.stepsize <= 0:
        raise SolverError(f"{path}: lr_policy \"step\" needs a positive stepsize")
    if not (param.HasField("net") or param.HasField("train_net") or param.HasField("net_param")
            or param.HasField("train_net_param")):
        raise SolverError(f"{path}: no net (train_net: \"...prototxt\")")
    for field in NET_FIELDS:
        values = getattr(param, field)
        for value in (values if field == "test_net" else ([values] if param.HasField(field) else [])):
            target = path.resolve().parent / value
            if not target.is_file():
                raise SolverError(f"{path}:{_line_of(text, field)}: {field} {value!r} does not exist (looked for "
                                  f"{target}; paths are relative to the solver's folder)")
    return param
