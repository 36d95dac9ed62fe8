"""Trial logs: every trial written as it finishes, so an interrupted study loses nothing.

A log is a JSON-lines file. Its first line names the study (a fingerprint of the workload, the
space, the objective, the SLOs and the backend); every other line is one trial. Rerunning the
same study on the same file continues where it stopped; a different study is refused rather
than mixed in.

One run at a time: :meth:`TrialLog.load` (or :meth:`TrialLog.open`) takes an exclusive lock on
``<log>.lock`` (an OS file lock, so it dies with the process however it ends) and holds it until
:meth:`TrialLog.close`; a second run on the same log is refused at once, naming the process that
holds it. A run killed while writing leaves at most one incomplete last line: the next load cuts
it off (keeping the bytes in ``<log>.corrupt-tail``) before anything is appended.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

import filelock

from tuner.core import ConfigError, SearchSpace, Trial, TunerError, Workload

FORMAT = "tuner-trial-log/1"


def fingerprint(
    workload: Workload, space: SearchSpace, objective: str, slos: list[str], backend: str
) -> dict[str, Any]:
    """What makes two runs the same study (their trials are interchangeable)."""
    digest = hashlib.sha1()
    for a in (workload.arrival, workload.prompt_tokens, workload.output_tokens):
        digest.update(a.tobytes())
    if workload.hash_ids is not None:  # two workloads differing only in prefixes differ
        digest.update(f"chunk {workload.hash_chunk_size}:".encode())
        digest.update(json.dumps(workload.hash_ids, separators=(",", ":")).encode())
    return {
        "format": FORMAT,
        "workload": f"{len(workload)} requests, sha1 {digest.hexdigest()[:16]}",
        "space": {k: list(v) for k, v in space.dimensions.items()},
        "base": space.base.model_dump(mode="json"),
        "objective": objective,
        "slos": slos,
        "backend": backend,
    }


class TrialLog:
    """Appends trials to a JSON-lines file and reads them back for a resumed run.

    The log is locked from :meth:`load` (or :meth:`open`) until :meth:`close`; use it as a
    context manager to be sure the lock is released.

    Example:
        >>> import pathlib, tempfile
        >>> from tuner import ServingConfig, Trial, TrialStatus
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "trials.jsonl"
        >>> with TrialLog(path, {"format": FORMAT}) as log:
        ...     log.load()
        ...     log.append(Trial(number=0, config=ServingConfig(), status=TrialStatus.FAILED,
        ...                      error="refused"))
        []
        >>> with TrialLog(path, {"format": FORMAT}) as log:
        ...     [t.error for t in log.load()]
        ['refused']
    """

    def __init__(self, path: str | Path, study: dict[str, Any]) -> None:
        self.path = Path(path)
        self.study = study
        self._lock: filelock.BaseFileLock | None = None
        self._loaded = False
        self._has_header = False

    # --- the lock ------------------------------------------------------------------------------
    @property
    def lock_path(self) -> Path:
        """The lock file next to the log."""
        return self.path.with_name(self.path.name + ".lock")

    @property
    def _owner_path(self) -> Path:
        return self.path.with_name(self.path.name + ".owner")

    @property
    def locked(self) -> bool:
        """Whether this object holds the log's lock."""
        return self._lock is not None

    def open(self) -> TrialLog:
        """Take the log's exclusive lock (a no-op if this object holds it already).

        Raises:
            ConfigError: another run holds the lock (naming its process and host when known),
                or the lock file cannot be created.
        """
        if self._lock is not None:
            return self
        if self.path.is_dir():
            raise ConfigError(
                f"{self.path}: is a directory, not a trial log file; give a file path "
                f"such as {self.path / 'trials.jsonl'}"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = filelock.FileLock(str(self.lock_path), timeout=0, thread_local=False)
            lock.acquire()
        except filelock.Timeout:
            raise ConfigError(
                f"{self.path}: trial log is in use by another run ({self._owner()}; lock "
                f"{self.lock_path}); wait for it to finish, or give this run another trial log"
            ) from None
        except OSError as e:
            raise ConfigError(f"{self.path}: cannot lock the trial log: {e}") from None
        self._lock = lock
        with contextlib.suppress(OSError):  # who holds it, for the message of a refused run
            owner = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            }
            self._owner_path.write_text(json.dumps(owner) + "\n", encoding="utf-8")
        return self

    def close(self) -> None:
        """Release the lock (safe to call twice, or without :meth:`open`)."""
        lock, self._lock = self._lock, None
        self._loaded = False
        if lock is None:
            return
        with contextlib.suppress(OSError, ValueError):
            if json.loads(self._owner_path.read_text(encoding="utf-8"))["pid"] == os.getpid():
                self._owner_path.unlink()
        lock.release(force=True)

    def __enter__(self) -> TrialLog:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _owner(self) -> str:
        try:
            owner = json.loads(self._owner_path.read_text(encoding="utf-8"))
            return f"pid {owner['pid']} on {owner['host']}, since {owner['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "process unknown"

    # --- reading and writing -------------------------------------------------------------------
    def load(self) -> list[Trial]:
        """Lock the log, repair an incomplete last line, and return the trials already
        recorded for this study (none if the file does not exist). The lock is held until
        :meth:`close`.

        Raises:
            ConfigError: the log is in use by another run, belongs to another study, or is not
                a trial log (naming the file and line); the lock is released then.
        """
        self.open()
        try:
            trials = self._read()
        except BaseException:
            self.close()
            raise
        self._loaded = True
        return trials

    def append(self, trial: Trial) -> None:
        """Write one trial (and the header first if the file is new), flushed to disk.

        Loads (and so locks and repairs) the log first if :meth:`load` was not called.

        Raises:
            ConfigError: as :meth:`load`, or the record cannot be written (the file is left
                as it was).
        """
        if not self._loaded:
            self.load()
        data = b""
        if not self._has_header:
            data += json.dumps(self.study).encode() + b"\n"
        data += json.dumps(trial.record(), allow_nan=True).encode() + b"\n"
        with self.path.open("ab") as f:
            end = f.tell()
            try:
                f.write(data)
                f.flush()
            except OSError as e:  # disk full: leave no partial line behind
                with contextlib.suppress(OSError):
                    f.truncate(end)
                raise ConfigError(f"{self.path}: cannot write trial {trial.number}: {e}") from e
        self._has_header = True

    def _read(self) -> list[Trial]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        except OSError as e:
            raise ConfigError(f"{self.path}: cannot read the trial log: {e}") from None
        self._has_header = False
        if not data:
            return []
        lines = data.split(b"\n")  # the last item is b"" when the file ends with a newline
        if len(lines) == 1 and json.dumps(self.study).encode().startswith(lines[0]):
            self._cut(0, data, 1, "an incomplete header")  # killed while writing the header
            return []
        self._check_header(lines[0])
        self._has_header = True
        trials = []
        offset = len(lines[0]) + 1
        last = len(lines) - 1 if lines[-1] else len(lines) - 2  # the last line with content
        for i in range(1, last + 1):
            raw, lineno = lines[i], i + 1
            try:
                trials.append(_parse_trial(raw))
            except _Unreadable as e:
                if i < last:
                    raise ConfigError(
                        f"{self.path}:{lineno}: unreadable trial record: {e}; the records "
                        "after it are intact: move this line out of the file to resume"
                    ) from None
                self._cut(offset, data[offset:], lineno, str(e))
                return trials
            offset += len(raw) + 1
        if lines[-1]:  # a complete last record that only lost its newline
            self._write_at_end(b"\n")
        return trials

    def _check_header(self, raw: bytes) -> None:
        try:
            header = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ConfigError(
                f"{self.path}:1: not a tuner trial log (not UTF-8 text); give another file, "
                "or delete this one to start over"
            ) from None
        except (ValueError, RecursionError):
            header = None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ConfigError(
                f"{self.path}:1: not a tuner trial log (line 1 is not its header); give "
                "another file, or delete this one to start over"
            )
        if header != self.study:
            diff = sorted(k for k in self.study if header.get(k) != self.study[k])
            raise ConfigError(
                f"{self.path} holds trials of another study (its {', '.join(diff)} differ); "
                "use a new trial log, or delete this one to start over"
            )

    def _cut(self, offset: int, tail: bytes, lineno: int, why: str) -> None:
        """Move the bytes from ``offset`` on into ``<log>.corrupt-tail``, then truncate."""
        aside = self.path.with_name(self.path.name + ".corrupt-tail")
        try:
            with aside.open("ab") as f:  # the copy first: a crash in between loses nothing
                f.write(tail if tail.endswith(b"\n") else tail + b"\n")
                f.flush()
                os.fsync(f.fileno())
            with self.path.open("r+b") as f:
                f.truncate(offset)
        except OSError as e:
            raise ConfigError(f"{self.path}:{lineno}: cannot repair the trial log: {e}") from e
        warnings.warn(
            f"{self.path}:{lineno}: ignoring a truncated last line ({why}; {len(tail)} bytes, "
            f"kept in {aside}); the run goes on from the complete records",
            stacklevel=4,
        )

    def _write_at_end(self, data: bytes) -> None:
        try:
            with self.path.open("ab") as f:
                f.write(data)
        except OSError as e:
            raise ConfigError(f"{self.path}: cannot repair the trial log: {e}") from e


class _Unreadable(Exception):
    """A line of a trial log that is not a trial record."""


def _parse_trial(raw: bytes) -> Trial:
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise _Unreadable(f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except RecursionError:
        raise _Unreadable("JSON nested too deeply") from None
    except ValueError as e:
        raise _Unreadable(f"not valid JSON ({e})") from None
    if not isinstance(record, dict):
        raise _Unreadable(f"expected a JSON object, got {type(record).__name__}")
    record.pop("feasible", None)
    try:
        return Trial(**record)
    except (TunerError, TypeError) as e:
        raise _Unreadable(str(e)) from None
