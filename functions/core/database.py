"""Local PostgreSQL for `make dev` and the tests, and the migration runner.

The server is a real PostgreSQL: the system's binaries when present, otherwise the ones
the `pgserver` package ships. initdb refuses to run as root, so under root the server
runs as the `postgres` user (or `nobody`).
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
COMPAT_SCRIPT = "00_supabase_compat"


def find_pg_bin() -> Path:
    if os.environ.get("CREDITGATE_PG_BIN_DIR"):
        return Path(os.environ["CREDITGATE_PG_BIN_DIR"])
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    try:
        import pgserver  # type: ignore[import-not-found]

        bundled = Path(pgserver.__file__).parent / "pginstall" / "bin"
        if (bundled / "pg_ctl").exists():
            return bundled
    except ImportError:
        pass
    raise RuntimeError("No PostgreSQL server binaries found: install postgresql or `pip install pgserver`")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalPostgres:
    data_dir: Path
    port: int
    bin_dir: Path
    user: str | None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            user=self.user,
            check=check,
            capture_output=True,
            text=True,
            cwd="/",
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop", check=False)


def _server_user() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("Running as root and no unprivileged user to run PostgreSQL as")


def start_local_postgres(data_dir: Path, port: int | None = None, *, durable: bool = True) -> LocalPostgres:
    """Starts (creating if needed) a server on 127.0.0.1 only, with no Unix socket."""
    bin_dir = find_pg_bin()
    user = _server_user()
    data_dir = data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = LocalPostgres(data_dir, port or free_port(), bin_dir, user)
    if user:
        entry = pwd.getpwnam(user)
        data_dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
        for parent in data_dir.parents:  # the server user must be able to reach its folder
            if parent == Path("/"):
                break
            os.chmod(parent, os.stat(parent).st_mode | 0o011)
    if (data_dir / "postmaster.pid").exists():
        # A previous run was killed without stopping its server: stop it, then start anew.
        server.stop()
    if not (data_dir / "PG_VERSION").exists():
        server._run(
            "initdb", "-D", str(data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"
        )
    options = [
        f"-p {server.port}",
        "-c listen_addresses=127.0.0.1",
        "-c unix_socket_directories=''",
        "-c max_connections=300",
        "-c shared_buffers=256MB",
    ]
    if not durable:  # throwaway test clusters: nothing to recover after a crash
        options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
    log = data_dir / "server.log"
    result = server._run(
        "pg_ctl", "-D", str(data_dir), "-o", " ".join(options), "-l", str(log), "-w", "-t", "60", "start", check=False
    )
    if result.returncode != 0:
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise RuntimeError(f"PostgreSQL did not start: {result.stderr}\n{tail}")
    _wait_ready(server.port)
    return server


def _wait_ready(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"PostgreSQL did not listen on {port}")


def migrations() -> list[Path]:
    """sql/NN_name.sql in the order of their numbers (100_… comes after 99_…, not before 20_…)."""
    return sorted(SQL_DIR.glob("*.sql"), key=migration_order)


def migration_order(path: Path) -> tuple[int, str]:
    number, _, _ = path.name.partition("_")
    return int(number), path.name


def uninstall(dsn: str) -> None:
    """Removes creditgate from a database: its schema (every table, with all balances and
    history), its public RPCs and the sign-up trigger on auth.users; Supabase's own auth
    schema and roles stay. One transaction: all of it or nothing."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        conn.execute("DROP TRIGGER IF EXISTS creditgate_on_auth_user_created ON auth.users")
        for (signature,) in conn.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'public' AND p.proname LIKE 'creditgate\\_%'"
        ).fetchall():
            conn.execute(f"DROP FUNCTION {signature}")
        conn.execute("DROP SCHEMA IF EXISTS creditgate CASCADE")


class MigrationChanged(RuntimeError):
    """An applied sql/ file differs from what was applied: the database and the code disagree."""


def migrate(dsn: str) -> list[str]:
    """Applies each sql/*.sql once, in order, each in its own transaction. The Supabase
    compatibility script is skipped where Supabase already provides auth. Refuses to run
    when a file applied before has changed since: that change would never reach the database."""
    import psycopg

    applied: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Two deploys migrating at once take turns (a session lock on a direct connection).
        conn.execute("SELECT pg_advisory_lock(hashtext('creditgate.migrate'))")
        try:
            on_supabase = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'supabase_admin')"
            ).fetchone()[0]
            done = _applied_checksums(conn)
            files = [(path, path.read_text()) for path in migrations()]
            # The compatibility script is never recorded, so it never counts as changed.
            changed = [path.name for path, text in files if done.get(path.stem) not in (None, _checksum(text))]
            if changed:
                raise MigrationChanged(
                    f"{', '.join(changed)} changed after being applied to this database. An applied "
                    "migration is never edited: put the change in a new sql/ file. (A local database "
                    "from `make dev` can be dropped and rebuilt: `make clean && make dev`.)"
                )
            for path, text in files:
                version = path.stem
                if version == COMPAT_SCRIPT:
                    if not on_supabase:
                        conn.execute(text)
                    continue
                if version in done:
                    if done[version] is None:  # recorded by `supabase db push` or an older creditgate
                        conn.execute(
                            "UPDATE creditgate.schema_migrations SET checksum = %s WHERE version = %s",
                            [_checksum(text), version],
                        )
                    continue
                with conn.transaction():
                    conn.execute(text)
                    conn.execute(
                        "INSERT INTO creditgate.schema_migrations (version, checksum) VALUES (%s, %s)",
                        [version, _checksum(text)],
                    )
                applied.append(version)
            conn.execute("SELECT creditgate.secure()")
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext('creditgate.migrate'))")
    return applied


def _checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _applied_checksums(conn) -> dict[str, str | None]:
    if conn.execute("SELECT to_regclass('creditgate.schema_migrations')").fetchone()[0] is None:
        return {}
    # Databases migrated before checksums were kept lack the column; their rows start unknown.
    conn.execute("ALTER TABLE creditgate.schema_migrations ADD COLUMN IF NOT EXISTS checksum text")
    return dict(conn.execute("SELECT version, checksum FROM creditgate.schema_migrations").fetchall())
