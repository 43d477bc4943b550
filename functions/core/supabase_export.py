"""The Supabase CLI's copy of sql/: `supabase/migrations/<timestamp>_<name>.sql`.

The Supabase CLI applies `supabase/migrations/*.sql` in file-name order and records each
file's leading number. sql/NN_name.sql keeps its number inside a fixed, valid timestamp
(2025-01-01 00:00 plus NN minutes), so the order is the same and a regenerated file
keeps its version. The compatibility script (00) is left out: Supabase has auth and its
roles already. Each copy also records its version in creditgate.schema_migrations, so a
database set up with `supabase db push` is up to date for `creditgate migrate` too.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from functions.core.database import COMPAT_SCRIPT, SQL_DIR, migrations

MIGRATIONS_DIR = SQL_DIR.parent / "supabase" / "migrations"
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
NAME = re.compile(r"^(\d{2,4})_([a-z0-9_]+)$")
HEADER = (
    "-- Generated from sql/{source} by `creditgate supabase-export`. Edit sql/{source} and\n"
    "-- run the command again; never edit this copy.\n"
)


def supabase_name(path: Path) -> str:
    match = NAME.match(path.stem)
    if not match:
        raise ValueError(f"sql/{path.name}: migration names must look like NN_name.sql (NN: 2 to 4 digits)")
    stamp = EPOCH + timedelta(minutes=int(match.group(1)))
    return f"{stamp:%Y%m%d%H%M%S}_{match.group(2)}.sql"


def render(path: Path) -> str:
    body = path.read_text()
    if not body.endswith("\n"):
        body += "\n"
    record = f"\nINSERT INTO creditgate.schema_migrations (version) VALUES ('{path.stem}') ON CONFLICT DO NOTHING;\n"
    return HEADER.format(source=path.name) + body + record


def expected() -> dict[str, str]:
    return {supabase_name(p): render(p) for p in migrations() if p.stem != COMPAT_SCRIPT}


def differences(directory: Path = MIGRATIONS_DIR) -> list[str]:
    """What `export` would change: files to write or to delete. Empty when in sync."""
    wanted = expected()
    present = {p.name: p.read_text() for p in directory.glob("*.sql")} if directory.exists() else {}
    changes = [f"write {name}" for name, text in wanted.items() if present.get(name) != text]
    changes += [f"delete {name}" for name in present if name not in wanted]
    return sorted(changes)


def export(directory: Path = MIGRATIONS_DIR) -> list[str]:
    changes = differences(directory)
    directory.mkdir(parents=True, exist_ok=True)
    wanted = expected()
    for change in changes:
        action, name = change.split(" ", 1)
        if action == "write":
            (directory / name).write_text(wanted[name])
        else:
            (directory / name).unlink()
    return changes
