"""The Ledger port: every balance change and every read of money is one call of one SQL
function (an RPC). Adapters differ only in how they reach PostgreSQL."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from functions.core.settings import Settings


class Ledger(ABC):
    @abstractmethod
    def rpc(self, name: str, request: dict[str, Any] | None = None) -> Any:
        """Calls public.<name>(request) in one transaction; raises ProblemError for PTxxx."""

    def close(self) -> None:  # noqa: B027 - adapters with resources override it
        pass

    # Named entry points, so callers read as what they do.
    def ensure_account(self, request: dict) -> dict:
        return self.rpc("creditgate_ensure_account", request)

    def set_member(self, request: dict) -> dict:
        return self.rpc("creditgate_set_member", request)

    def remove_member(self, request: dict) -> dict:
        return self.rpc("creditgate_remove_member", request)

    def is_member(self, account_id: str, user_id: str) -> bool:
        return bool(self.rpc("creditgate_is_member", {"account_id": account_id, "user_id": user_id}))

    def change_plan(self, request: dict) -> dict:
        return self.rpc("creditgate_change_plan", request)

    def debit(self, request: dict) -> dict:
        return self.rpc("creditgate_debit", request)

    def set_allowances(self, request: dict) -> dict:
        return self.rpc("creditgate_set_allowances", request)

    def lift_hold(self, request: dict) -> dict:
        return self.rpc("creditgate_lift_hold", request)

    def account_history(self, account_id: str) -> dict:
        return self.rpc("creditgate_account_history", {"account_id": account_id})

    def get_account(self, account_id: str) -> dict:
        return self.rpc("creditgate_get_account", {"account_id": account_id})

    def list_accounts(self, request: dict) -> dict:
        return self.rpc("creditgate_list_accounts", request)

    def grant_credits(self, request: dict) -> dict:
        return self.rpc("creditgate_grant_credits", request)

    def gate(self, request: dict) -> dict:
        return self.rpc("creditgate_gate", request)

    def release_reservation(self, request: dict) -> dict:
        return self.rpc("creditgate_release_reservation", request)

    def record_usage(self, request: dict) -> dict:
        return self.rpc("creditgate_record_usage", request)

    def record_usage_batch(self, events: list[dict]) -> list[dict]:
        return self.rpc("creditgate_record_usage_batch", {"events": events})["results"]

    def balance(self, account_id: str) -> dict:
        return self.rpc("creditgate_balance", {"account_id": account_id})

    def transactions(self, request: dict) -> dict:
        return self.rpc("creditgate_transactions", request)

    def usage_summary(self, request: dict) -> dict:
        return self.rpc("creditgate_usage_summary", request)

    def orders(self, account_id: str) -> dict:
        return self.rpc("creditgate_orders", {"account_id": account_id})

    def entitlements(self, account_id: str | None, session_id: str | None = None, client_ip: str | None = None) -> dict:
        """An account's, or a guest's (no account: its session and address count)."""
        return self.rpc(
            "creditgate_entitlements", {"account_id": account_id, "session_id": session_id, "client_ip": client_ip}
        )

    def catalog(self) -> dict:
        return self.rpc("creditgate_catalog")

    def prices(self) -> dict:
        return self.rpc("creditgate_prices")

    def health(self) -> dict:
        return self.rpc("creditgate_health")

    def reconcile(self, account_id: str | None = None) -> dict:
        return self.rpc("creditgate_reconcile", {"account_id": account_id})

    def metrics(self, days: int) -> dict:
        return self.rpc("creditgate_metrics", {"days": days})

    def apply_catalog(self, document: dict) -> dict:
        return self.rpc("creditgate_apply_catalog", document)

    def lease_notices(self, limit: int) -> list[dict]:
        return self.rpc("creditgate_lease_notices", {"limit": limit})["notices"]

    def settle_notices(self, delivered: list[int], failed: list[int], untried: list[int]) -> dict:
        return self.rpc("creditgate_settle_notices", {"delivered": delivered, "failed": failed, "untried": untried})

    # Money in: checkout orders and Stripe events.
    def create_order(self, request: dict) -> dict:
        return self.rpc("creditgate_create_order", request)

    def billing_customer(self, account_id: str, user_id: str | None = None) -> dict:
        return self.rpc("creditgate_billing_customer", {"account_id": account_id, "user_id": user_id})

    def set_stripe_customer(self, account_id: str, customer_id: str) -> str:
        answer = self.rpc("creditgate_set_stripe_customer", {"account_id": account_id, "customer_id": customer_id})
        return answer["stripe_customer_id"]

    def attach_checkout(self, request: dict) -> dict:
        return self.rpc("creditgate_attach_checkout", request)

    def checkout_session(self, session_id: str) -> dict:
        return self.rpc("creditgate_checkout_session", {"session_id": session_id})

    def apply_stripe_event(self, event: dict) -> dict:
        return self.rpc("creditgate_apply_stripe_event", event)

    def run_maintenance(self, request: dict | None = None) -> dict:
        return self.rpc("creditgate_run_maintenance", request or {})


def build_ledger(settings: Settings) -> Ledger:
    """The adapter the settings ask for. Neither imports its driver until first used."""
    if settings.database_url:
        from functions.core.ledger.postgres import PostgresLedger

        return PostgresLedger(
            settings.database_url, max_size=settings.db_pool_max, prepared_statements=settings.db_prepared_statements
        )
    if settings.supabase_url and settings.supabase_service_role_key:
        from functions.core.ledger.supabase import SupabaseLedger

        return SupabaseLedger(settings.supabase_url, settings.supabase_service_role_key)
    from functions.core.errors import ServiceUnavailable

    raise ServiceUnavailable(
        "No database configured: set DATABASE_URL or SUPABASE_URL + SUPABASE_SERVICE_ROLE_KEY",
        code="database_not_configured",
    )
