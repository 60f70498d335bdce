"""The BLAS threads of this process: Caffe's OpenBLAS (the library pycaffe
loaded) starts one thread per usable core. Where other processes share the
cores (tools/infer.py's workers), its threads would spin on cores those
need: the tools set the count for their process (docs/USAGE.md, "Threads").
OpenBLAS splits a product's rows and columns among its threads, never a sum,
so the count changes the time, not the results (docs/BENCHMARKS.md)."""
from __future__ import annotations

import ctypes
import logging
from functools import lru_cache

from deconvnet.common.machine import loaded_libraries

LOG = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _openblas() -> ctypes.CDLL | None:
    path = next((p for p in loaded_libraries() if "libopenblas" in p.rsplit("/", 1)[-1]), None)
    return None if path is None else ctypes.CDLL(path)


def blas_threads() -> int | None:
    """The loaded OpenBLAS's thread count; None when none is loaded."""
    lib = _openblas()
    return None if lib is None else int(lib.openblas_get_num_threads())


def set_blas_threads(count: int) -> int | None:
    """Sets the loaded OpenBLAS's threads (import caffe first); returns the
    count now in force, None when no OpenBLAS is loaded (another BLAS reads
    its own variables, e.g. OMP_NUM_THREADS)."""
    lib = _openblas()
    if lib is None:
        LOG.warning("no OpenBLAS loaded: its thread count was not set (another BLAS reads its own settings)")
        return None
    lib.openblas_set_num_threads(max(1, count))
    return blas_threads()
