"""Files that appear whole or not at all: write beside the target under a
temporary name, then rename over it."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temporary path in path's folder; renames it to ``path`` if
    the block succeeds and removes it otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The suffix stays last, so writers that go by it (OpenCV, PIL) still can.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".part{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_net(net, path: Path) -> Path:
    """A pycaffe Net's weights as a caffemodel, atomically."""
    with atomic_path(path) as tmp:
        net.save(str(tmp))
    return path
