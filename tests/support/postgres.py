"""A throwaway PostgreSQL cluster for the shared-mode tests and the shared-mode benchmark.

The cluster is made from the server binaries of the Debian `postgresql` package
(`/usr/lib/postgresql/<version>/bin`), in a fresh temporary directory, listening on
127.0.0.1 at a free port (and on a Unix socket inside that directory), and removed at the end.
Nothing outside the directory is touched, so it works the same on a laptop and in CI.

`initdb` and `postgres` refuse to run as root. When the tests run as root (containers, CI),
the server runs as an unprivileged account instead: `postgres` (which the Debian package
creates) or else `nobody`, through `subprocess`'s own `user=`/`group=` switch, so neither
`sudo`, `runuser` nor `setpriv` has to be installed.

Where the binaries are missing, `missing_reason()` says so and the tests skip with that reason
(`scripts/test.sh` prints the same fact before running pytest).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BINARY_GLOB = "/usr/lib/postgresql/*/bin"
DATABASE = "plangate"


def find_bindir() -> Path | None:
    """The newest installed server `bin` directory; `PLANGATE_PG_BINDIR` overrides the search."""
    override = os.environ.get("PLANGATE_PG_BINDIR")
    candidates = [override] if override else glob.glob(BINARY_GLOB)
    found = [Path(c) for c in candidates if (Path(c) / "initdb").is_file()]
    if not found and not override:
        initdb = shutil.which("initdb")
        if initdb:
            found = [Path(initdb).parent]

    def version(path: Path) -> tuple[int, ...]:
        digits = path.parent.name
        return tuple(int(p) for p in digits.split(".") if p.isdigit()) or (0,)

    return max(found, key=version) if found else None


def missing_reason() -> str | None:
    """Why a cluster cannot be made here, or None when it can."""
    if find_bindir() is None:
        where = os.environ.get("PLANGATE_PG_BINDIR") or BINARY_GLOB
        return (
            f"PostgreSQL server binaries not found ({where}/initdb): shared-mode tests "
            "need the Debian 'postgresql' package (apt-get install postgresql)"
        )
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresCluster:
    """One throwaway cluster. `start()` creates and starts it; `close()` stops and deletes it.

    `stop()`/`start()` in between stop and restart the same server on the same port (the
    shared-mode tests use that to take the database away from running sidecars).
    """

    def __init__(self, bindir: Path, settings: dict[str, str] | None = None) -> None:
        self.bindir = bindir
        self.settings = dict(settings or {})
        self.root = Path(tempfile.mkdtemp(prefix="plangate-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "server.log"
        self.port = free_port()
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:
            account = _unprivileged_account()
            self._user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self._initialised = False
        self._watchdog: subprocess.Popen[bytes] | None = None

    # -- addresses ---------------------------------------------------------------------------

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    # -- lifecycle ---------------------------------------------------------------------------

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a server binary as the cluster's owner; with `check`, fail with its output and log."""
        env = {**os.environ, "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}
        env.pop("PGDATA", None)
        done = subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
            **self._user,
        )
        if check and done.returncode != 0:
            log = self.logfile.read_text() if self.logfile.exists() else ""
            raise RuntimeError(
                f"{args[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n{log}"
            )
        return done

    def start(self) -> PostgresCluster:
        if not self._initialised:
            self._run(
                "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                "-E", "UTF8", "--locale=C", "--no-sync",
            )  # fmt: skip
            self._initialised = True
            self._watchdog = self._start_watchdog()
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.root),
            "max_connections": "200",
            **self.settings,
        }
        opts = " ".join(f"-c {k}={v}" for k, v in options.items())
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", opts, "-w", "start"
        )
        if not self._has_database():
            self.execute(f"CREATE DATABASE {DATABASE}", database="postgres")
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast`: disconnect every client, roll back, shut down cleanly)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    @property
    def running(self) -> bool:
        done = self._run("pg_ctl", "-D", str(self.data), "status", check=False)
        return done.returncode == 0

    def close(self) -> None:
        try:
            if self._initialised and self.running:
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            if self._watchdog is not None:
                self._watchdog.communicate(timeout=30)  # EOF: it finds nothing left to do

    def _start_watchdog(self) -> subprocess.Popen[bytes]:
        """A process that stops the server and deletes the directory once this process is gone,
        even if it is killed: pg_ctl leaves the server running detached, and a test run
        stopped by a timeout or Ctrl-C must not leave a PostgreSQL behind."""
        user = self._user.get("user", -1)
        group = self._user.get("group", -1)
        args = [str(self.bindir / "pg_ctl"), str(self.data), str(self.root), str(user), str(group)]
        return subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, *args],
            stdin=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C to the test run's process group spares it
        )

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- SQL ---------------------------------------------------------------------------------

    def execute(self, sql: str, params: Any = None, database: str = DATABASE) -> list[Any]:
        """Run one statement in autocommit and return its rows (empty when it returns none)."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(sql, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description is not None else []

    def _has_database(self) -> bool:
        rows = self.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,), database="postgres"
        )
        return bool(rows)


_WATCHDOG = """
import os, shutil, subprocess, sys
pg_ctl, data, root, user, group = sys.argv[1:6]
sys.stdin.buffer.read()  # returns when the test process closes the pipe or dies
if os.path.isdir(data):
    owner = {} if int(user) < 0 else {"user": int(user), "group": int(group), "extra_groups": []}
    subprocess.run([pg_ctl, "-D", data, "-m", "immediate", "stop"], capture_output=True,
                   cwd=root, **owner)
shutil.rmtree(root, ignore_errors=True)
"""


def _unprivileged_account() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' account exists")
