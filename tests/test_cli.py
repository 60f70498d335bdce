"""Flags generated from dataclasses (deconvnet.common.cli): names, types,
defaults, booleans, required fields, choices and overrides."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from deconvnet.common.cli import add_options, given_options, option, options_from_args


@dataclass(frozen=True)
class Example:
    stage: int = option(choices=(1, 2), help="which stage")
    out_dir: Path = option(Path("out"), flag="--out", help="where")
    rate: float = option(0.5, help="a rate")
    limit: int | None = option(None, help="at most")
    balance: bool = option(True, help="do not balance")
    strict: bool = option(False, help="fail early")
    hidden: str = option("x", cli=False)


def parse(argv: list[str], **kwargs) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_options(parser, Example, **kwargs)
    return parser.parse_args(argv)


def test_flags_types_and_defaults():
    config = options_from_args(Example, parse(["--stage", "2"]))
    assert config == Example(stage=2, out_dir=Path("out"), rate=0.5, limit=None, balance=True, strict=False)
    config = options_from_args(Example, parse(["--stage", "1", "--out", "o", "--rate", "2", "--limit", "7",
                                               "--no-balance", "--strict"]), hidden="y")
    assert config == Example(stage=1, out_dir=Path("o"), rate=2.0, limit=7, balance=False, strict=True, hidden="y")
    assert isinstance(config.out_dir, Path) and isinstance(config.rate, float)


def test_required_choices_and_hidden_fields():
    with pytest.raises(SystemExit):
        parse([])                      # --stage is required
    with pytest.raises(SystemExit):
        parse(["--stage", "3"])        # not a choice
    with pytest.raises(SystemExit):
        parse(["--stage", "1", "--hidden", "z"])


def test_help_shows_defaults():
    parser = argparse.ArgumentParser()
    add_options(parser, Example)
    text = parser.format_help()
    assert "--rate RATE" in text and "a rate (default 0.5)" in text and "--no-balance" in text


def test_prefix_and_overrides():
    args = parse(["--ex-stage", "1", "--ex-rate", "3"], prefix="ex-", overrides=True)
    assert given_options(Example, args, prefix="ex-") == dict(stage=1, rate=3.0)
    base = Example(stage=2, rate=9.0)
    assert replace(base, **given_options(Example, parse([], overrides=True))) == base
