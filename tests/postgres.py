"""A throw-away PostgreSQL server on loopback for the tests that need one (Debian's package).

The server runs as a non-root user (PostgreSQL refuses root): the current user, or ``postgres``
through ``runuser`` when the tests run as root (CI). Missing binaries or driver skip the test,
unless ``CI=true`` or ``TUNER_REQUIRE_POSTGRES=1``: then they fail it.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REQUIRED = os.environ.get("CI", "").lower() == "true" or (
    os.environ.get("TUNER_REQUIRE_POSTGRES", "0") == "1"
)


def _bindir() -> str | None:
    found = shutil.which("pg_ctl")
    if found:
        return os.path.dirname(os.path.realpath(found))
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return os.path.dirname(candidates[-1]) if candidates else None


def _missing(why: str) -> None:
    if REQUIRED:
        pytest.fail(f"PostgreSQL is required here (CI=true or TUNER_REQUIRE_POSTGRES=1): {why}")
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server in a temporary folder; yield its URL; stop it and remove the folder."""
    bindir = _bindir()
    if bindir is None:
        _missing("PostgreSQL's server binaries (pg_ctl, initdb) are not installed")
    if importlib.util.find_spec("psycopg") is None:
        _missing("the psycopg (3) driver is not installed (pip install 'vllm-slo-tuner[postgres]')")
    assert bindir is not None
    root = tempfile.mkdtemp(prefix="tuner-pg-")
    data, sock = os.path.join(root, "data"), os.path.join(root, "sock")
    os.makedirs(sock)
    prefix: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    log = os.path.join(root, "server.log")

    def pg(*args: str) -> None:
        done = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            tail = Path(log).read_text()[-2000:] if os.path.exists(log) else ""
            pytest.fail(f"{' '.join(args)} failed: {done.stdout}{done.stderr}{tail}")

    try:
        pg(f"{bindir}/initdb", "-D", data, "-U", "tuner", "--auth=trust", "-E", "UTF8")
        opts = f"-k {sock} -h 127.0.0.1 -p {port} -c fsync=off"
        pg(f"{bindir}/pg_ctl", "-D", data, "-o", opts, "-l", log, "-w", "-t", "60", "start")
        try:
            yield f"postgresql://tuner@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                [*prefix, f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"],
                capture_output=True,
                timeout=120,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
