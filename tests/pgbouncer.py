"""A real PgBouncer in front of the test PostgreSQL, in transaction pooling, for tests and benchmarks.

:func:`running_pgbouncer` writes a configuration into a fresh folder, starts ``pgbouncer`` on a free local
port (as the ``postgres`` user: PgBouncer refuses to run as root), waits until it answers, and stops it
afterwards. It needs the ``pgbouncer`` binary (Debian: ``apt-get install pgbouncer``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy

POOL_SIZE = 4
"""Server connections PgBouncer opens per database and user: what PostgreSQL sees of any number of workers."""

START_TIMEOUT_S = 30

QUERY_WAIT_TIMEOUT_S = 30
"""How long a client waits for a server connection before PgBouncer fails its query (its default: 120 s)."""


@dataclass(frozen=True)
class PgBouncer:
    url: str
    """The PostgreSQL URL with PgBouncer's host and port instead of the server's."""
    pool_size: int


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _config(server: sqlalchemy.URL, port: int, pool_size: int, auth_file: Path) -> str:
    return f"""[databases]
{server.database} = host={server.host or '127.0.0.1'} port={server.port or 5432} dbname={server.database}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {auth_file}
pool_mode = transaction
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 2000
server_idle_timeout = 600
query_wait_timeout = {QUERY_WAIT_TIMEOUT_S}
ignore_startup_parameters = extra_float_digits,options
"""


@contextmanager
def running_pgbouncer(postgres_url: str, pool_size: int = POOL_SIZE) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode in front of the database of ``postgres_url`` (trust authentication)."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.path.exists(binary):
        raise FileNotFoundError("pgbouncer is not installed: apt-get install -y pgbouncer (bash .ci/run does it)")
    server = sqlalchemy.engine.make_url(postgres_url)
    port = _free_port()
    folder = Path(tempfile.mkdtemp(prefix="hft-pgbouncer-"))
    folder.chmod(0o755)  # read by the postgres user
    auth_file = folder / "users.txt"
    auth_file.write_text(f'"{server.username or "postgres"}" ""\n')
    config = folder / "pgbouncer.ini"
    config.write_text(_config(server, port, pool_size, auth_file))
    command = [binary, str(config)]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "postgres"]
    log = (folder / "pgbouncer.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_until_listening(port, process, folder)
        yield PgBouncer(url=server.set(host="127.0.0.1", port=port).render_as_string(hide_password=False),
                        pool_size=pool_size)
    finally:
        process.terminate()
        process.wait(timeout=START_TIMEOUT_S)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def _wait_until_listening(port: int, process: subprocess.Popen, folder: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited ({process.returncode}): "
                               f"{(folder / 'pgbouncer.log').read_text()[-2000:]}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"pgbouncer did not listen on 127.0.0.1:{port} within {START_TIMEOUT_S} s")


SERVER_CONNECTIONS = sqlalchemy.text(
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
    "AND backend_type = 'client backend'")
"""Connections PostgreSQL serves for the asking connection's database, apart from that one."""


class PeakConnections:
    """Samples PostgreSQL's connections to a database in a thread; ``peak`` is the most seen.

    It holds its own connection from the start, so that a server that runs out of connections during the
    measurement (the point of measuring) still answers it. ``before`` is what was already connected when the
    measurement began (idle pools of earlier tests in the same process, say): ``peak - before`` is what the
    measured workers added.
    """

    def __init__(self, postgres_url: str) -> None:
        self.engine = sqlalchemy.create_engine(postgres_url, poolclass=sqlalchemy.pool.NullPool)
        self.peak = 0
        self.before = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakConnections:
        self._connection = self.engine.connect()
        self.before = self._connection.execute(SERVER_CONNECTIONS).scalar_one()
        self._connection.commit()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._connection.close()
        self.engine.dispose()

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, self._connection.execute(SERVER_CONNECTIONS).scalar_one())
            self._connection.commit()
            self.samples += 1
