"""What every command-line tool shares.

Importing this module quiets Caffe's glog (``GLOG_minloglevel=2`` unless the
environment says otherwise), so a tool imports it before anything that loads
Caffe: import sorting puts ``deconvnet.common`` first among our modules and
``caffe`` after them all (pyproject.toml). It also gives the repository's
paths, one logging set-up, and argparse flags generated from a dataclass, so
that a dataclass stays the one owner of its defaults.

A dataclass field becomes a flag ``--<prefix><name>`` (underscores as
dashes) with the field's type and default. Its metadata (see ``option``) may
hold ``help``, ``flag`` (another name for the flag) and ``choices``; a bool
that defaults to True becomes ``--no-<name>``. Fields whose metadata says
``cli=False``, or that are named in ``skip``, get no flag.
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import tempfile
import types
import typing
from dataclasses import MISSING, Field, field, fields
from pathlib import Path
from typing import Any, Callable


def quiet_caffe() -> None:
    """Caffe's glog prints warnings and errors only, unless the environment
    says otherwise; it reads this when Caffe's library loads."""
    os.environ.setdefault("GLOG_minloglevel", "2")


quiet_caffe()

ROOT = Path(__file__).resolve().parents[2]
PROTOTXT = ROOT / "prototxt"
MODELS = ROOT / "models"


def _int_at_least(least: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer of at least `least`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


positive_int = _int_at_least(1, "a positive integer")
non_negative_int = _int_at_least(0, "a whole number of at least 0")


def setup_logging(verbose: bool = False) -> None:
    """Messages as plain lines on stderr, as every tool prints them."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s")


def option(default: Any = MISSING, help: str = "", flag: str | None = None, cli: bool = True,
           choices: tuple | None = None, default_factory: Any = MISSING) -> Any:
    """A dataclass field with the help text (and flag name, choices) of its option."""
    metadata = dict(help=help, flag=flag, cli=cli, choices=choices)
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _scalar_type(hint: Any) -> Any:
    """The type argparse converts to: X for ``X | None``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _flag(f: Field, prefix: str) -> str:
    return f.metadata.get("flag") or f"--{prefix}{f.name.replace('_', '-')}"


def _dest(f: Field, prefix: str) -> str:
    return f"{prefix.replace('-', '_')}{f.name}"


def _default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def cli_fields(cls: type, skip: tuple[str, ...] = ()) -> list[Field]:
    return [f for f in fields(cls) if f.metadata.get("cli", True) and f.name not in skip]


def add_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, prefix: str = "",
                skip: tuple[str, ...] = (), overrides: bool = False) -> None:
    """Adds a flag for each field of dataclass ``cls``. With ``overrides``,
    every flag defaults to None (unset) so that ``given_options`` returns only
    what the user typed, to be laid over another instance."""
    hints = typing.get_type_hints(cls)
    for f in cli_fields(cls, skip):
        kind = _scalar_type(hints[f.name])
        default = _default(f)
        text = f.metadata.get("help", "")
        shown = "" if default is MISSING or default is None else f" (default {default})"
        dest = _dest(f, prefix)
        if kind is bool:
            if default is True:
                name = f.metadata.get("flag") or f"--{prefix}no-{f.name.replace('_', '-')}"
                parser.add_argument(name, dest=dest, action="store_false", default=None if overrides else True,
                                    help=text)
            else:
                parser.add_argument(_flag(f, prefix), dest=dest, action="store_true",
                                    default=None if overrides else False, help=text)
            continue
        required = default is MISSING and not overrides
        parser.add_argument(_flag(f, prefix), dest=dest, type=kind, required=required,
                            choices=f.metadata.get("choices"),
                            default=None if overrides or required else default,
                            help=text + shown)


def _values(cls: type, args: argparse.Namespace, prefix: str, skip: tuple[str, ...]) -> dict:
    return {f.name: getattr(args, _dest(f, prefix)) for f in cli_fields(cls, skip)}


def given_options(cls: type, args: argparse.Namespace, prefix: str = "", skip: tuple[str, ...] = ()) -> dict:
    """The options of ``cls`` the user gave (not None), as field values."""
    return {k: v for k, v in _values(cls, args, prefix, skip).items() if v is not None}


def options_from_args(cls: type, args: argparse.Namespace, prefix: str = "", skip: tuple[str, ...] = (),
                      **extra: Any) -> Any:
    """An instance of ``cls`` from its flags (see add_options) and ``extra``."""
    return cls(**_values(cls, args, prefix, skip), **extra)


# --- flags given, and flags without effect ----------------------------------------

_UNSET = object()


class _UnsetList(list):
    """The marker of an append option: argparse appends to a copy of it."""


def given_flags(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> set[str]:
    """The dests of the options typed on the command line (even when typed
    with their default value). argparse fills in a default only where the
    namespace lacks the attribute, so a namespace pre-filled with a marker
    keeps the marker exactly where nothing was typed."""
    import sys

    markers = {a.dest: _UnsetList() if isinstance(a, argparse._AppendAction) else _UNSET
               for a in parser._actions if a.dest != argparse.SUPPRESS}
    parsed = parser.parse_args(sys.argv[1:] if argv is None else argv, argparse.Namespace(**markers))
    return {dest for dest, value in vars(parsed).items() if value is not markers[dest]}


def flag_name(parser: argparse.ArgumentParser, dest: str) -> str:
    for action in parser._actions:
        if action.dest == dest and action.option_strings:
            return max(action.option_strings, key=len)
    return "--" + dest.replace("_", "-")


def ineffective_flags(parser: argparse.ArgumentParser, given: set[str],
                      rules: list[tuple[tuple[str, ...], bool, str]]) -> list[str]:
    """The one rule every tool follows for flags that would be accepted and
    ignored: each rule is (dests, inactive, why); a dest the user typed while
    ``inactive`` holds gives a message naming the flag and why it has no
    effect. The tool refuses (exit 2) when the list is not empty."""
    return [f"{flag_name(parser, dest)} has no effect {why}"
            for dests, inactive, why in rules if inactive for dest in dests if dest in given]


def refuse_ineffective(tool: str, parser: argparse.ArgumentParser, argv: list[str] | None,
                       rules: list[tuple[tuple[str, ...], bool, str]]) -> bool:
    """Logs every flag without effect (see ineffective_flags); True when any."""
    problems = ineffective_flags(parser, given_flags(parser, argv), rules)
    for problem in problems:
        logging.error("%s: %s; leave it out", tool, problem)
    return bool(problems)


# --- outputs that cannot be written ------------------------------------------------

# Errors that mean "this output cannot be written here", with the remedy.
_OUTPUT_ERRORS = {
    errno.EROFS: "the file system is read-only; write the outputs somewhere else",
    errno.EACCES: "permission denied; write the outputs somewhere you may write, or fix the folder's permissions",
    errno.EPERM: "permission denied; write the outputs somewhere you may write, or fix the folder's permissions",
    errno.ENOSPC: "the disk is full; free space (or choose another disk) and rerun",
    errno.EDQUOT: "the disk quota is exceeded; free space (or choose another disk) and rerun",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EISDIR: "the path is a folder, not a file; name a file",
}


def output_error_message(err: OSError) -> str | None:
    """One line for an OSError that means an output cannot be written, or None."""
    remedy = _OUTPUT_ERRORS.get(err.errno or 0)
    if remedy is None:
        return None
    where = err.filename if err.filename is not None else "an output"
    return f"cannot write {where}: {remedy}"


def check_output_folder(folder: Path) -> str | None:
    """None when files can be created in ``folder`` (made if missing), else
    the message: checked before long work, so that a read-only, missing or
    full output folder stops a tool at once, not after an hour."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe.")
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        if err.filename is None:
            err.filename = str(folder)
        return output_error_message(err) or f"cannot write into {folder}: {err.strerror}"
    return None


def check_output_file(path: Path, flag: str) -> str | None:
    """check_output_folder for a file's folder, and the file is not a folder."""
    path = Path(path)
    if path.is_dir():
        return f"{flag} {path} is a folder; name a file"
    return check_output_folder(path.parent)


class ToolError(Exception):
    """A stop whose message is for the user (it names the cause and the
    remedy): run_tool logs it as one line and exits with status 2."""


def run_tool(main: Callable[[], int], tool: str) -> int:
    """Runs a tool's main(); a ToolError, or an output that cannot be written
    (read-only, full, forbidden), ends it with one line naming the file and
    the remedy (exit status 2 and 1), instead of a traceback."""
    try:
        return main()
    except ToolError as err:
        logging.error("%s: %s", tool, err)
        return 2
    except OSError as err:
        message = output_error_message(err)
        if message is None:
            raise
        logging.error("%s: %s", tool, message)
        return 1


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (links and relative paths resolved)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def colliding_paths(paths: dict[str, Path]) -> list[tuple[str, str]]:
    """Pairs of flags whose paths name the same file."""
    names = list(paths)
    return [(x, y) for i, x in enumerate(names) for y in names[i + 1:] if same_file(paths[x], paths[y])]
