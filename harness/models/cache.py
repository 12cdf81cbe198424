"""A small write-once on-disk cache of built artefacts (e.g. pre-trained tiny models).

Layout: one directory per entry, ``cache_dir() / <namespace> / <key>``, where the key names
everything the content depends on (a hash of the parameters and a format version). An entry is
**complete** when its directory holds the marker file :data:`COMPLETE_MARKER`.

Writing (:func:`atomic_dir`): the content is built in a fresh temporary sibling directory
(``.<key>.tmp-XXXX``, in the same parent, hence on the same filesystem) and, only once the body
of the ``with`` block has succeeded, the marker is written and the directory is renamed into
place with :func:`os.replace` — a single atomic ``rename(2)``. An exception (or a kill) inside
the block therefore never leaves an entry behind: readers see either no entry or a complete one.
On an exception the temporary directory is removed; after a hard kill (SIGKILL, power loss) it
stays, under a dot-name that readers never look at, and may be deleted by hand.

Write-once: rename onto a non-empty directory fails, so when two processes build the same entry
at once the first rename wins and the loser discards its temporary directory and uses the
winner's entry (both built the same thing: the key says so). A directory at the final path
without the marker (e.g. left by a non-atomic copy) is moved aside and replaced.

Reading is lock-free: :func:`is_complete` — the entry exists and has its marker — and
:func:`cached_dir`, which returns a complete entry or builds one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = [
    "CACHE_ENV",
    "COMPLETE_MARKER",
    "atomic_dir",
    "cache_dir",
    "cached_dir",
    "is_complete",
]

CACHE_ENV = "RLHF_HARNESS_CACHE"
"""Environment variable overriding the cache root."""

COMPLETE_MARKER = ".complete"
"""File written last into an entry: its presence means the entry is complete."""


def cache_dir() -> Path:
    """The cache root: ``$RLHF_HARNESS_CACHE`` if set and non-empty, else
    ``~/.cache/rlhf-harness``. Not created here."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "rlhf-harness"


def is_complete(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a complete cache entry (a directory holding the marker)."""
    return (Path(path) / COMPLETE_MARKER).is_file()


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _move_aside(path: Path) -> None:
    """Rename an incomplete entry out of the way (atomically) and delete it."""
    trash = path.parent / f".{path.name}.trash-{os.getpid()}-{time.monotonic_ns()}"
    try:
        os.replace(path, trash)
    except FileNotFoundError:
        return
    _remove(trash)


@contextlib.contextmanager
def atomic_dir(final_path: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a cache entry atomically: yields an empty temporary directory to write into.

    On normal exit the marker is written and the directory is renamed to ``final_path``; if a
    complete entry got there first (another process won the race), the temporary directory is
    discarded and the existing entry kept. On an exception the temporary directory is removed,
    nothing appears at ``final_path``, and the exception propagates.
    """
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        marker = {"created": time.time(), "pid": os.getpid()}
        (tmp / COMPLETE_MARKER).write_text(json.dumps(marker) + "\n")
        for attempt in range(2):
            try:
                os.replace(tmp, final)
                return
            except OSError:
                if is_complete(final):  # another writer won: theirs is as good as ours
                    _remove(tmp)
                    return
                if attempt == 0 and final.exists():
                    _move_aside(final)
                    continue
                raise
    except BaseException:
        _remove(tmp)
        raise


def cached_dir(
    final_path: str | os.PathLike[str], build: Callable[[Path], None]
) -> tuple[Path, bool]:
    """``(path, hit)``: the complete entry at ``final_path``, building it first if missing.

    ``build(tmp)`` writes the entry's content into ``tmp`` (inside :func:`atomic_dir`).
    ``hit`` is True when the entry was already complete and nothing was built.
    """
    final = Path(final_path)
    if is_complete(final):
        return final, True
    with atomic_dir(final) as tmp:
        build(tmp)
    return final, False
