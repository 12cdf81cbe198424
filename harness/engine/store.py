"""The run store: one folder per run, written atomically, read by reports and by resumption.

Layout::

    runs/<suite>/
      .lock                      the PID of the one process writing to the store (which holds
                                 an fcntl lock on the folder itself)
      suite.yaml                 the suite file as run
      runs.json                  the run ids of the suite as last run (the others are stale)
      shared/<key>/              preference data and reward model, per (task, params, seed, ...)
      <run-id>/                  <label slug>-<task slug>-s<seed>-<hash>
        spec.json                the resolved run spec (what the run id hashes)
        status.json              {"status": running | done | failed | diverged, ...}
        metrics.parquet          tidy long table: one row per (step, metric)
        summary.json             final metrics, compute totals, versions, seed, config hash
        log.txt                  the run's log
        traceback.txt            for failed runs

Every file is written to a temporary name in the same folder and renamed into place
(``os.replace`` is atomic on POSIX), so a reader — or a suite killed mid-write — never sees a
half-written file. A run is *finished* when its status is done, failed or diverged and its files
read back; running a suite again skips finished runs (failed ones too, unless asked to retry) and
restarts the rest, including a finished run whose files are corrupt.

**One writer.** A process that writes runs holds an exclusive lock on the store folder
(:meth:`RunStore.lock`; its PID is written to ``.lock``, and deleting that file lets no second
writer in); a second one is refused at once, naming the holder's PID, or waits when asked to.
The lock dies with its holder, so a killed suite never leaves the store locked.

**Runs on other hosts** (the Ray executor) write into the store while the suite's process holds
the lock for them: each such run carries the lock's *lease* (a token the holder writes to
``.lock`` beside its PID), and every write it makes first checks that the lock is still held
under that token (:func:`lease`). A run that outlives its suite's process (Ray's workers live on
when the driver is killed) then writes nothing: its result is dropped, and the run, left
``running``, is redone by the next ``run``.

**Interrupted and crashed runs.** Every run executes in a child process that the suite's
process supervises (:mod:`harness.engine.executors`). A run found ``running`` when its suite starts
was interrupted from outside (the suite was killed, preempted, the machine rebooted): it is redone,
however often that happens. Only a child that the supervisor sees die during its run (killed for
memory, ``os._exit``, a signal it sent itself) is counted in ``status.json``'s ``crashes``;
at :data:`MAX_CRASHES` the run is marked ``failed`` with the reason ``crashed``, so one such run
never stops a suite for good.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import StoreError

STATUSES = ("running", "done", "failed", "diverged")
FINISHED = ("done", "failed", "diverged")
CORRUPT = "corrupt"
"""The state of a run folder whose files do not read back (reported, skipped, redone)."""
MAX_CRASHES = 2
"""A run whose process the supervisor saw die this many times is marked failed (crashed)."""
MANIFEST = "runs.json"
LOCK = ".lock"
SLUG_LENGTH = 48
METRIC_COLUMNS = ("run_id", "step", "samples", "tokens", "wall_seconds", "flops", "source",
                  "metric", "value")
"""Columns of ``metrics.parquet``. ``source`` is ``train`` (the algorithm's step metrics) or
``eval`` (the evaluators'); ``wall_seconds`` and ``flops`` are cumulative."""


def _file_mode() -> int:
    """The mode an ordinary new file gets (mkstemp's are 0600: readable by other users of a
    shared store, e.g. Ray workers running as another user, only with the umask's mode)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def slug(text: str, length: int = SLUG_LENGTH) -> str:
    """A folder-name-safe form of ``text``: letters, digits, ``.``, ``_``, ``=``, ``,``, ``-``.

    Anything else (``/``, ``..``, spaces, brackets, control characters) becomes ``_``; a leading
    dot is dropped, so a slug is never ``.``, ``..`` or hidden; long text is cut to ``length``.
    Slugs name folders, not runs: a run's id adds a hash of its spec, so two texts that slug alike
    still get distinct folders.
    """
    out = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", text)
    out = re.sub(r"\.{2,}", "_", out).lstrip(".")
    return out[:length].rstrip(".") or "_"


def describe_os_error(exc: OSError, path: Path | str | None = None) -> str:
    """One line for an operating-system error met while writing the store or a report."""
    where = path or exc.filename or "the run store"
    if exc.errno == errno.ENOSPC:
        return f"{where}: no space left on device"
    if exc.errno == errno.EDQUOT:
        return f"{where}: disk quota exceeded"
    return f"{where}: {exc.strerror or exc}"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        _name_the_target(exc, path)
        raise


def _name_the_target(exc: BaseException, path: Path) -> None:
    """An OS error while writing ``path`` through a temporary file names ``path``."""
    if isinstance(exc, OSError) and exc.errno is not None:
        raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from exc


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def atomic_write_parquet(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        _name_the_target(exc, path)
        raise


@dataclass
class RunRecord:
    """What the store holds of one run."""

    run_id: str
    path: Path
    spec: dict[str, Any]
    status: dict[str, Any]
    summary: dict[str, Any] | None
    problem: str | None = None
    """Why the folder is corrupt (a file that does not read back), or None."""

    @property
    def state(self) -> str:
        if self.problem is not None:
            return CORRUPT
        return str(self.status.get("status", "running"))

    def metrics(self) -> pd.DataFrame:
        path = self.path / "metrics.parquet"
        if not path.exists():
            return pd.DataFrame(columns=list(METRIC_COLUMNS))
        return pd.read_parquet(path)


_HELD: dict[str, int] = {}
_TOKENS: dict[str, str] = {}
"""The lease token of each store whose lock this process holds."""
LEASE_ENV = "RLHF_HARNESS_STORE_LEASES"
"""The environment variable that carries :func:`lease`'s leases (JSON: store folder → token) to
the child processes a leased process starts, so that their writes check them too."""


def _leases() -> dict[str, str]:
    """Stores this process writes to on another process's lock: the lease token each write
    checks (:func:`lease`; inherited through :data:`LEASE_ENV`)."""
    try:
        leases = json.loads(os.environ.get(LEASE_ENV) or "{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in leases.items()} if isinstance(leases, dict) else {}
"""Store locks this process holds (path → depth): taking a held lock again nests."""


class RunStore:
    """The folder ``root/<suite>`` of a suite's runs."""

    def __init__(self, root: str | os.PathLike[str], suite: str) -> None:
        self.path = Path(root) / suite
        self.suite = suite

    def run_dir(self, run_id: str) -> Path:
        return self.path / run_id

    def shared_dir(self, key: str) -> Path:
        return self.path / "shared" / key

    # --- one writer ---------------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the store folder, or say in one line why it cannot be one."""
        for parent in (self.path.parent, self.path):
            if parent.exists() and not parent.is_dir():
                raise StoreError(f"{parent}: is a file, not a folder (a run store is a folder)")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(describe_os_error(exc, self.path)) from None

    @contextlib.contextmanager
    def lock(self, *, wait: bool = False, poll: float = 0.5) -> Iterator[None]:
        """Hold the store's writer lock for the block (see the module docstring).

        Raises :class:`~harness.errors.StoreError` naming the holder's PID when another process
        holds it, unless ``wait``: then it waits until the holder is done.
        """
        import fcntl

        self.ensure()
        path = self.path / LOCK
        key = str(self.path.resolve())
        if key in _HELD:  # this process holds it already (the CLI, then the executor)
            _HELD[key] += 1
            try:
                yield
            finally:
                _HELD[key] -= 1
            return
        # The lock is on the store folder itself, not on a file in it: deleting ``.lock`` by
        # hand cannot let a second writer in. ``.lock`` only tells who holds it.
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not wait:
                        holder = self.holder() or "unknown"
                        raise StoreError(
                            f"{self.path}: in use by another rlhf-harness process (pid {holder}); "
                            f"wait for it to finish, or pass --wait"
                        ) from None
                    time.sleep(poll)
            token = secrets.token_hex(16)
            atomic_write_bytes(path, f"{os.getpid()}\n{token}\n".encode())
            _HELD[key], _TOKENS[key] = 1, token
            try:
                yield
            finally:
                del _HELD[key], _TOKENS[key]
        finally:
            os.close(fd)  # releases the lock

    def holder(self) -> int | None:
        """The PID written by the last process that took the lock, if any."""
        try:
            return int((self.path / LOCK).read_text().split()[0]) or None
        except (OSError, ValueError, IndexError):
            return None

    def lease_token(self) -> str | None:
        """The lease of the lock this process holds on the store (None when it holds none):
        what a run written from another process carries (:func:`lease`)."""
        return _TOKENS.get(str(self.path.resolve()))

    def _check_lease(self) -> None:
        """Before a write: a process writing on another's lease (:func:`lease`) may write only
        while that lock is still held under that lease."""
        token = _leases().get(str(self.path.resolve()))
        if token is None:
            return
        import fcntl

        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            held = False  # nobody holds the writer's lock: the suite's process is gone
        except BlockingIOError:
            held = True
        finally:
            os.close(fd)  # releases the shared lock at once, if it was taken
        try:
            words = (self.path / LOCK).read_text().split()
        except OSError:
            words = []
        if not held or words[1:2] != [token]:
            who = f"pid {words[0]}" if words else "its process"
            raise StoreError(
                f"{self.path}: the suite's process that started this run ({who}) no longer "
                "holds the store's lock; the run's result is dropped (the next run redoes it)"
            )

    def clean_temporaries(self) -> list[Path]:
        """Remove what killed writers left: ``shared/.*.tmp-*`` and ``.trash-*`` folders and
        ``.*.tmp`` files. Only safe under :meth:`lock` (no other writer is mid-way)."""
        removed: list[Path] = []
        shared = self.path / "shared"
        if shared.is_dir():
            for p in shared.iterdir():
                if p.name.startswith(".") and (".tmp-" in p.name or ".trash-" in p.name):
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(True)
                    removed.append(p)
        if self.path.is_dir():
            for p in self.path.glob("*/.*.tmp"):
                p.unlink(missing_ok=True)
                removed.append(p)
        return removed

    # --- the suite as it is now ---------------------------------------------------------------

    def write_manifest(self, run_ids: Iterable[str]) -> None:
        """Record the run ids of the suite as it is now; other run folders are stale."""
        atomic_write_json(self.path / MANIFEST, {"runs": sorted(run_ids)})

    def manifest(self) -> set[str] | None:
        """The run ids of the suite as last run, or None when the store has no readable list."""
        try:
            return set(json.loads((self.path / MANIFEST).read_text())["runs"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # --- runs -----------------------------------------------------------------------------------

    def read_status(self, run_id: str) -> dict[str, Any] | None:
        path = self.run_dir(run_id) / "status.json"
        try:
            status = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return status if isinstance(status, dict) else None

    def status(self, run_id: str) -> str | None:
        status = self.read_status(run_id)
        return None if status is None else str(status.get("status"))

    def is_finished(self, run_id: str, *, retry_failed: bool = False) -> bool:
        """Finished, and its results read back (a corrupt finished run is redone)."""
        state = self.status(run_id)
        if retry_failed and state == "failed":
            return False
        if state not in FINISHED:
            return False
        return _problem(self.run_dir(run_id), summary=True) is None

    def crashes(self, run_id: str) -> int:
        """How many attempts of this run were seen to crash their own process (0 for a finished
        run); an attempt interrupted from outside is not one."""
        status = self.read_status(run_id)
        if not status or status.get("status") != "running":
            return 0
        try:
            return max(int(status.get("crashes", 0)), 0)
        except (TypeError, ValueError):
            return 0

    def start(self, run_id: str, spec: dict[str, Any]) -> Path:
        """Begin (or restart) a run: clear an interrupted attempt's files, write spec and status.

        The crashes recorded against earlier attempts carry over; the attempts that ended
        without one were interrupted (counted in ``interrupted``)."""
        self._check_lease()
        d = self.run_dir(run_id)
        previous = self.read_status(run_id) or {}
        again = previous.get("status") == "running"
        attempt = int(previous.get("attempt", 0)) + 1 if again else 1
        crashes = self.crashes(run_id) if again else 0
        interrupted = max(attempt - 1 - crashes, 0)
        d.mkdir(parents=True, exist_ok=True)
        for stale in ("metrics.parquet", "summary.json", "traceback.txt", "log.txt"):
            (d / stale).unlink(missing_ok=True)
        for tmp in d.glob(".*.tmp"):  # left by a write that was killed mid-way
            tmp.unlink(missing_ok=True)
        atomic_write_json(d / "spec.json", spec)
        status: dict[str, Any] = {"status": "running", "pid": os.getpid(), "attempt": attempt,
                                  "interrupted": interrupted, "crashes": crashes}
        if crashes and previous.get("crash"):
            status["crash"] = previous["crash"]
        atomic_write_json(d / "status.json", status)
        return d

    def record_crash(self, run_id: str, how: str) -> int:
        """The supervisor saw this run's process die during the run (``how``); returns the
        run's crashes so far."""
        self._check_lease()
        status = self.read_status(run_id)
        if not status or status.get("status") != "running":
            return 0
        status["crashes"] = self.crashes(run_id) + 1
        status["crash"] = how
        atomic_write_json(self.run_dir(run_id) / "status.json", status)
        return int(status["crashes"])

    def interrupted(self, run_id: str) -> None:
        """The user stopped the suite during this run: it is pending again, not a crash."""
        self._check_lease()
        status = self.read_status(run_id)
        if status and status.get("status") == "running":
            status["interrupted"] = int(status.get("interrupted", 0)) + 1
            atomic_write_json(self.run_dir(run_id) / "status.json", status)

    def finish(
        self,
        run_id: str,
        status: str,
        *,
        metrics: pd.DataFrame,
        summary: dict[str, Any],
        traceback: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Write a run's results; the status file goes last, so 'finished' implies complete."""
        if status not in FINISHED:
            raise ValueError(f"a run finishes as one of {FINISHED}, not {status!r}")
        self._check_lease()
        d = self.run_dir(run_id)
        atomic_write_parquet(d / "metrics.parquet", metrics)
        atomic_write_json(d / "summary.json", summary)
        if traceback:
            atomic_write_bytes(d / "traceback.txt", traceback.encode())
        atomic_write_json(d / "status.json", {"status": status, "reason": reason})

    def mark_failed(self, run_id: str, spec: dict[str, Any], reason: str,
                    traceback: str | None = None, *, steps: int | None = None) -> None:
        """Record a run that could not report its own end (its process died, or was stopped at
        a limit after ``steps`` steps) as failed."""
        if self.read_status(run_id) is None:
            self.start(run_id, spec)
        self.finish(
            run_id, "failed", metrics=pd.DataFrame(columns=list(METRIC_COLUMNS)),
            summary={"run_id": run_id, "status": "failed", "reason": reason,
                     "seed": spec.get("seed"), "steps": steps},
            traceback=traceback or reason, reason=reason,
        )

    def records(self) -> Iterator[RunRecord]:
        """Every run folder of the suite (those with a spec), in name order.

        A folder whose files do not read back is yielded with ``problem`` set (state
        ``corrupt``) rather than breaking the reader.
        """
        if not self.path.is_dir():
            return
        for d in sorted(p for p in self.path.iterdir() if p.is_dir() and p.name not in
                        ("shared", "tuning") and not p.name.startswith(".")):
            record = self.record(d.name)
            if record is not None:
                yield record

    def record(self, run_id: str) -> RunRecord | None:
        """The run folder ``run_id`` (None when it has no spec); see :meth:`records`."""
        d = self.run_dir(run_id)
        if not (d / "spec.json").exists():
            return None
        loaded: dict[str, Any] = {}
        problem = None
        for name in ("spec", "status", "summary"):
            path = d / f"{name}.json"
            if not path.exists():
                loaded[name] = None
                continue
            try:
                value = json.loads(path.read_text())
                if not isinstance(value, dict):
                    raise ValueError("not a JSON object")
                loaded[name] = value
            except (OSError, ValueError) as exc:
                loaded[name] = None
                problem = problem or f"{path.name}: {_short(exc)}"
        state = (loaded["status"] or {}).get("status")
        if problem is None and state in FINISHED:
            problem = _problem(d, summary=False)
        return RunRecord(d.name, d, loaded["spec"] or {}, loaded["status"] or {},
                         loaded["summary"], problem)


@contextlib.contextmanager
def lease(root: str | os.PathLike[str], suite: str, token: str) -> Iterator[None]:
    """Within the block, this process writes to the suite's store at ``root`` on the lease
    ``token`` of another process's lock (:meth:`RunStore.lease_token`): every write first
    checks that the lock is still held under it, and raises :class:`StoreError` otherwise. The
    processes it starts in the block inherit the lease (:data:`LEASE_ENV`)."""
    key = str(RunStore(root, suite).path.resolve())
    before = os.environ.get(LEASE_ENV)
    os.environ[LEASE_ENV] = json.dumps({**_leases(), key: token}, sort_keys=True)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(LEASE_ENV, None)
        else:
            os.environ[LEASE_ENV] = before


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:120] or type(exc).__name__


def _problem(run_dir: Path, *, summary: bool) -> str | None:
    """Why a finished run's results do not read back, or None when they do."""
    if summary:
        try:
            if not isinstance(json.loads((run_dir / "summary.json").read_text()), dict):
                return "summary.json: not a JSON object"
        except (OSError, ValueError) as exc:
            return f"summary.json: {_short(exc)}"
    path = run_dir / "metrics.parquet"
    try:
        import pyarrow.parquet as pq

        pq.read_metadata(path)
    except Exception as exc:  # pyarrow raises its own error types for bad files
        return f"metrics.parquet: {_short(exc)}"
    return None


def shared_data_key(spec: dict[str, Any]) -> str:
    """The ``shared/`` key of a run's preference data: its task, params, seed, preference spec
    (with a data file's content hash) and device. Reward models are cached under
    ``<key>-reward-<fit hash>``."""
    from harness.config import config_hash

    return config_hash({k: spec[k] for k in ("task", "task_params", "seed", "preferences",
                                             "device")})


def collect_garbage(store: RunStore, *, dry_run: bool = False, wait: bool = False) -> list[Path]:
    """Remove the store's stale runs (not in its manifest), the shared entries no current run
    uses, and what killed writers left; returns what was (or, dry, would be) removed."""
    if not store.path.is_dir():
        raise StoreError(f"{store.path}: no run store there (expected runs/<suite>)")

    def current_runs() -> set[str]:
        current = store.manifest()
        if current is None:
            raise StoreError(
                f"{store.path}: no {MANIFEST} (the list of the suite's runs, written by "
                f"'rlhf-harness run'); not a run store, or run the suite once so that stale "
                f"runs can be told apart"
            )
        return current

    current_runs()  # before the lock: a folder that is no store is left as it was
    with store.lock(wait=wait):
        current = current_runs()
        doomed: list[Path] = []
        keys = set()
        for rec in store.records():
            if rec.run_id in current:
                if rec.spec:
                    with contextlib.suppress(KeyError, TypeError):
                        keys.add(shared_data_key(rec.spec))
            else:
                doomed.append(rec.path)
        shared = store.path / "shared"
        if shared.is_dir():
            for entry in sorted(shared.iterdir()):
                if entry.name.startswith("."):
                    doomed.append(entry)
                elif entry.name.split("-reward-")[0] not in keys:
                    doomed.append(entry)
        for d in sorted(store.path.glob("*/.*.tmp")):
            doomed.append(d)
        if not dry_run:
            for path in doomed:
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        return doomed
