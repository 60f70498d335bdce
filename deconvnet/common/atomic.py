"""Files that appear whole or not at all: write beside the target under a
temporary name, then rename over it.

The temporary name holds the host and process id of its writer, so that the
first write into a folder by a later process removes what killed writers
left behind there (only its own host's, and only when that process is gone). The finished
file gets the mode the user's umask gives a new file (``mkstemp`` alone
would make every output 0600, unreadable to colleagues on a shared
cluster).
"""
from __future__ import annotations

import os
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """What open() would give a new file under the current umask."""
    return 0o666 & ~_umask()


def _writer_tag() -> str:
    return f"{socket.gethostname().split('.')[0]}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


_CLEANED: set[tuple[int, Path]] = set()


def remove_stale_parts(folder: Path, again: bool = False) -> list[Path]:
    """Temporary files in ``folder`` left by dead writers on this host; once
    per folder and process (a folder of labels is written thousands of
    times) unless ``again`` (after this process's workers were stopped)."""
    folder = Path(folder)
    if (os.getpid(), folder) in _CLEANED and not again:
        return []
    _CLEANED.add((os.getpid(), folder))
    marker = f".{socket.gethostname().split('.')[0]}-"
    removed = []
    for part in folder.glob(f".*{marker}*.part*"):
        tag = part.name.rsplit(marker, 1)[1].split(".", 1)[0]
        if tag.isdigit() and int(tag) != os.getpid() and not _alive(int(tag)):
            part.unlink(missing_ok=True)
            removed.append(part)
    return removed


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temporary path in path's folder; renames it to ``path`` if
    the block succeeds and removes it otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(path.parent)
    # The suffix stays last, so writers that go by it (OpenCV, PIL) still can.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.{_writer_tag()}.",
                               suffix=f".part{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        if os.path.isfile(tmp):
            os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_net(net, path: Path) -> Path:
    """A pycaffe Net's weights as a caffemodel, atomically."""
    with atomic_path(path) as tmp:
        net.save(str(tmp))
    return path
