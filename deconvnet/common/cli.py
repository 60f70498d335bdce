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
import logging
import os
import types
import typing
from dataclasses import MISSING, Field, field, fields
from pathlib import Path
from typing import Any


def quiet_caffe() -> None:
    """Caffe's glog prints warnings and errors only, unless the environment
    says otherwise; it reads this when Caffe's library loads."""
    os.environ.setdefault("GLOG_minloglevel", "2")


quiet_caffe()

ROOT = Path(__file__).resolve().parents[2]
PROTOTXT = ROOT / "prototxt"
MODELS = ROOT / "models"


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


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
