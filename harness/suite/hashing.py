"""What a run id hashes besides the spec: file contents, plugin source and versions.

The digest of a preference-data file, the hash of a plugin's (or the core's) source files, the
versions of the core and of torch, and a run's code identity (:func:`code_identity`), so that a
run made by other code is not mistaken for this code's run.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from pathlib import Path
from typing import Any

from harness.errors import HarnessError


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's content; an OSError for what is not a regular file (a FIFO would
    block the read, a device such as ``/dev/zero`` never end it)."""
    import errno
    import os
    import stat

    digest = hashlib.sha256()
    with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK)) as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a FIFO, a device or a folder)",
                          str(path))
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_SOURCE_HASHES: dict[str, str | None] = {}


def source_hash(obj: Any) -> str | None:
    """A hash of the source of the module (or top-level package) defining ``obj``: an edited
    plugin under an editable install gets new run ids. None when there is no source file."""
    module = inspect.getmodule(obj)
    if module is None:
        return None
    top = sys.modules.get(module.__name__.split(".")[0], module)
    name = top.__name__
    if name not in _SOURCE_HASHES:
        folders = [Path(d) for d in getattr(top, "__path__", None) or []]
        files = ([(f.relative_to(d).as_posix(), f) for d in folders
                  for f in sorted(d.rglob("*.py"))] if folders
                 else [(Path(top.__file__).name, Path(top.__file__))]
                 if getattr(top, "__file__", None) else [])
        digest = hashlib.sha256()
        try:
            for rel, f in files:
                digest.update(rel.encode() + b"\0" + f.read_bytes())
        except OSError:
            files = []
        _SOURCE_HASHES[name] = digest.hexdigest()[:16] if files else None
    return _SOURCE_HASHES[name]


CORE_VERSION_KEYS = ("rlhf-harness", "rlhf-harness-source", "torch")
"""What a run's summary records of the code under every plugin (``versions``): the harness's
version and a hash of its source, and torch's version. A report refuses to mix runs whose
records differ (:func:`harness.report.data.load_store`)."""


def core_versions() -> dict[str, str]:
    """This process's :data:`CORE_VERSION_KEYS`: the harness's version and source hash
    (the ``harness`` package's ``.py`` files), and torch's version."""
    import torch

    from harness import __version__

    return {"rlhf-harness": __version__,
            "rlhf-harness-source": source_hash(core_versions) or "?",
            "torch": str(torch.__version__)}


def describe_versions(versions: dict[str, Any]) -> str:
    """``rlhf-harness 0.4.0 (source 1a2b…), torch 2.5.1``; ``?`` for what a run did not
    record (runs made before the source was recorded)."""
    core = {k: versions.get(k) or "?" for k in CORE_VERSION_KEYS}
    return (f"rlhf-harness {core['rlhf-harness']} (source {core['rlhf-harness-source']}), "
            f"torch {core['torch']}")


def code_identity(host: Any, algorithm: str, task: str) -> dict[str, Any]:
    """The distribution, version and source hash of the algorithm's plugin (and of the task's,
    when a plugin rather than the core registered it)."""
    out: dict[str, Any] = {}
    for kind, name in (("algorithm", algorithm), ("task", task)):
        try:
            reg = host.registration(kind, name)
        except HarnessError:
            continue
        if reg.plugin.core:
            continue
        out[kind] = {
            "plugin": reg.plugin.distribution or reg.plugin.name,
            "version": reg.plugin.version,
            "source": source_hash(reg.obj),
        }
    return out
