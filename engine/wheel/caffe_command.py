"""The ``caffe`` command (``caffe._command``: the pip wheel's entry point and
``.venv/bin/caffe``).

It runs Caffe's command-line tool inside this Python process: the tool is
built as a shared library, libcaffe_tool (engine patch 0013), and called
through ``ctypes.PyDLL``, which keeps the GIL held. Importing this module
imports pycaffe (its package), which registers the Python layer type
(engine patch 0016). Python layers of a net (``type: "Python"``) then
import with this interpreter and its packages, and no shared libpython has
to exist on the machine."""
from __future__ import annotations

import ctypes
import os
import sys

LIBRARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libcaffe_tool.so")


def main() -> int:
    # Python layer modules in the working folder import without PYTHONPATH=.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    tool = ctypes.PyDLL(LIBRARY)
    tool.caffe_tool_main.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
    tool.caffe_tool_main.restype = ctypes.c_int
    args = [b"caffe"] + [os.fsencode(a) for a in sys.argv[1:]]
    argv = (ctypes.c_char_p * (len(args) + 1))(*args, None)
    sys.stdout.flush()
    return tool.caffe_tool_main(len(args), argv)


if __name__ == "__main__":
    sys.exit(main())
