"""A private PostgreSQL server for tests: its own data directory, port and socket folder, stopped afterwards.

Debian's PostgreSQL 15 binaries are used (``/usr/lib/postgresql/*/bin``); ``initdb`` refuses to run as
root, so under root the server runs as the ``postgres`` system user. ``$NAS_LLM_TEST_PG_URL`` skips all
of this and uses an existing server.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields a ``postgresql://`` URL of a fresh, empty server on 127.0.0.1 (trust auth, user ``nasllm``)."""
    if os.environ.get("NAS_LLM_TEST_PG_URL"):
        yield os.environ["NAS_LLM_TEST_PG_URL"]
        return
    bindir = pg_bin()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL server binaries not found (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="nasllm-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    port = _free_port()
    try:
        subprocess.run(_as_server_user([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "nasllm",
                                        "--no-sync", "-E", "UTF8"]), check=True, capture_output=True, text=True)
        opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
        subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"),
                                        "-w", "-t", "60", "start"]), check=True, capture_output=True, text=True)
        url = f"postgresql://nasllm@127.0.0.1:{port}/postgres"
        _wait_ready(url)
        yield url
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                           capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(url: str, timeout: float = 30) -> None:
    import sqlalchemy

    t0 = time.time()
    while True:
        try:
            with sqlalchemy.create_engine(url).connect() as c:
                c.execute(sqlalchemy.text("select 1"))
            return
        except Exception:
            if time.time() - t0 > timeout:
                raise
            time.sleep(0.2)
