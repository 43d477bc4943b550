"""PostgresLedger: psycopg 3 with a small pool; one statement, one round trip per call."""

from __future__ import annotations

import json
import threading
from typing import Any
from urllib.parse import urlsplit

from functions.core.errors import ServiceUnavailable, data_problem, ledger_problem
from functions.core.ledger import Ledger


class PostgresLedger(Ledger):
    def __init__(
        self, dsn: str, *, max_size: int = 10, prepared_statements: bool | None = None, wait_seconds: float = 5.0
    ) -> None:
        self.dsn = dsn
        self.wait_seconds = wait_seconds
        self.max_size = max_size
        if prepared_statements is None:
            # Supavisor's transaction mode listens on 6543 and cannot keep prepared statements.
            prepared_statements = urlsplit(dsn).port != 6543
        self.prepared_statements = prepared_statements
        self._pool = None
        self._lock = threading.Lock()

    @property
    def pool(self):
        # psycopg costs ~80 ms to import: paid on the first call, not by every cold import.
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    from psycopg_pool import ConnectionPool

                    self._pool = ConnectionPool(
                        self.dsn,
                        min_size=1,
                        max_size=self.max_size,
                        open=True,
                        name="creditgate",
                        kwargs={"autocommit": True, "prepare_threshold": 0 if self.prepared_statements else None},
                    )
        return self._pool

    def rpc(self, name: str, request: dict[str, Any] | None = None) -> Any:
        import psycopg
        from psycopg.types.json import Jsonb
        from psycopg_pool import PoolTimeout

        query = f"SELECT public.{name}(%s::jsonb)" if request is not None else f"SELECT public.{name}()"
        params = [Jsonb(request)] if request is not None else []
        try:
            with self.pool.connection(timeout=self.wait_seconds) as conn:
                return conn.execute(query, params).fetchone()[0]
        except psycopg.Error as error:
            state = error.sqlstate or ""
            if state.startswith("PT"):
                detail = error.diag.message_detail
                raise ledger_problem(
                    int(state[2:]), error.diag.message_primary or "error", json.loads(detail) if detail else {}
                ) from None
            if (problem := data_problem(state, error.diag.message_primary)) is not None:
                raise problem from None
            if isinstance(error, psycopg.OperationalError):
                raise ServiceUnavailable("The database is unreachable", code="database_unavailable") from error
            raise
        except PoolTimeout as error:
            raise ServiceUnavailable("The database is unreachable", code="database_unavailable") from error

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
