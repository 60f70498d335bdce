#!/usr/bin/env python3
"""Writes every network and solver under prototxt/ from deconvnet/net/nets.py and
deconvnet/net/solvers.py. With --check, writes nothing and exits 1 if a committed
file differs from what the generator produces."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from deconvnet.common.cli import PROTOTXT, setup_logging
from deconvnet.net.prototxt import stale_files, write_all

DEFAULT_DIR = PROTOTXT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR, help="folder (default: prototxt/)")
    parser.add_argument("--check", action="store_true", help="only compare, exit 1 on a difference")
    args = parser.parse_args(argv)
    setup_logging()
    if args.check:
        stale = stale_files(args.out)
        for name in stale:
            logging.error("%s differs from the generator; run tools/make_prototxt.py", args.out / name)
        return 1 if stale else 0
    write_all(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
