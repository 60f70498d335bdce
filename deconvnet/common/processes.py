"""Worker processes that end with their parent and say how they ended."""
from __future__ import annotations

import os
import signal


def die_with_parent(parent: int) -> None:
    """Has the kernel kill this (forked) process when ``parent`` dies:
    `caffe train` never finalises its embedded Python, and a SIGKILLed tool
    runs no clean-up, so neither can stop its workers itself."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(0)


def how_it_ended(exitcode: int | None) -> str:
    """A process's exit code in words: "killed by signal SIGKILL", "exit status 1"."""
    if exitcode is not None and exitcode < 0:
        return f"killed by signal {signal.Signals(-exitcode).name}"
    return f"exit status {exitcode}"
