"""Threshold notices go out to the app's webhook: signed, each taken once, retried later
when the app fails, never failing maintenance itself. The webhook is a real HTTP server."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from functions.core.database import free_port
from functions.core.maintenance.run import run_maintenance
from functions.core.settings import Settings
from tests.maintenance.helpers import drain

SECRET = "whsec-notices-0123456789"


class Webhook:
    """Answers each POST with the next status of `statuses` (then 200) and keeps what came."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        self.lock = threading.Lock()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with webhook.lock:
                    webhook.received.append((dict(self.headers), body))
                    status = webhook.statuses.pop(0) if webhook.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/creditgate"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self) -> list[dict]:
        return [json.loads(body) for _, body in self.received]


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.server.shutdown()


def settings_for(url: str | None) -> Settings:
    return Settings(environment="test", notices_webhook_url=url, notices_webhook_secret=SECRET if url else None)


@pytest.fixture
def account_with_a_notice(ledger, make_account, sql):
    """An account that has just crossed 75 % of its credits allowance, with every older
    notice of the shared test database out of the way."""
    drain(ledger)
    # Operator alerts are recorded by the Python run only (after the SQL one drain() calls):
    # record what earlier tests left due now, so it is marked delivered with the rest.
    ledger.rpc("creditgate_record_operator_alerts", {})
    sql("UPDATE creditgate.notices SET delivered_at = now() WHERE delivered_at IS NULL")
    account = make_account("free")  # 100 credits of allowance and 50 welcome credits
    ledger.record_usage({"account_id": account, "feature": "ai_message", "quantity": 400, "idempotency_key": "u"})
    assert ledger.run_maintenance({})["notices"] == 1  # recorded, not yet sent
    return account


def state(sql, account: str) -> list[tuple]:
    """(kind, delivered, given up, attempts, leased) of the account's notices."""
    return sql(
        "SELECT kind, delivered_at IS NOT NULL, gave_up_at IS NOT NULL, attempts, next_attempt_at > now() "
        "FROM creditgate.notices WHERE account_id = %s",
        account,
    )


def cross_75_percent(ledger, make_account, n: int) -> list[str]:
    accounts = [make_account("free") for _ in range(n)]
    for i, account in enumerate(accounts):
        ledger.record_usage(
            {"account_id": account, "feature": "ai_message", "quantity": 400, "idempotency_key": f"x{i}"}
        )
    ledger.run_maintenance({})
    return accounts


class TestDelivery:
    def test_each_notice_is_posted_once_signed_and_marked_delivered(self, ledger, sql, webhook, account_with_a_notice):
        account = account_with_a_notice
        answer = run_maintenance(ledger, settings_for(webhook.url))
        assert (answer["notices_delivered"], answer["notices_failed"]) == (1, 0)
        run_maintenance(ledger, settings_for(webhook.url))  # nothing due any more
        assert len(webhook.received) == 1

        headers, body = webhook.received[0]
        t, v1 = (part.split("=", 1)[1] for part in headers["Creditgate-Signature"].split(","))
        expected = hmac.new(SECRET.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(v1, expected)
        notice = json.loads(body)
        assert headers["Creditgate-Notice-Id"] == str(notice["id"])
        assert notice["type"] == "notice.allowance_75" and notice["account_id"] == account
        assert notice["key"] == "credits" and notice["plan"] == "free" and notice["attempt"] == 1
        assert notice["balance"] == {"available": "70", "debt": "0", "allowance": "100", "used_this_period": "80"}
        assert state(sql, account) == [("allowance_75", True, False, 1, True)]

    def test_a_failing_webhook_keeps_the_notice_for_a_later_attempt(self, ledger, sql, webhook, account_with_a_notice):
        account = account_with_a_notice
        webhook.statuses = [500]
        answer = run_maintenance(ledger, settings_for(webhook.url))
        assert (answer["notices_delivered"], answer["notices_failed"]) == (0, 1)
        assert state(sql, account) == [("allowance_75", False, False, 1, True)]  # leased: not offered again at once
        run_maintenance(ledger, settings_for(webhook.url))
        assert len(webhook.received) == 1

        sql("UPDATE creditgate.notices SET next_attempt_at = now() WHERE account_id = %s", account)  # lease over
        answer = run_maintenance(ledger, settings_for(webhook.url))
        assert answer["notices_delivered"] == 1
        assert [b["attempt"] for b in webhook.bodies()] == [1, 2]
        assert state(sql, account) == [("allowance_75", True, False, 2, True)]

    def test_an_unreachable_webhook_does_not_fail_maintenance(self, ledger, sql, account_with_a_notice):
        answer = run_maintenance(ledger, settings_for(f"http://127.0.0.1:{free_port()}/nobody"))
        assert (answer["notices_delivered"], answer["notices_failed"]) == (0, 1)
        assert state(sql, account_with_a_notice) == [("allowance_75", False, False, 1, True)]

    def test_without_a_webhook_notices_wait(self, ledger, sql, account_with_a_notice):
        answer = run_maintenance(ledger, settings_for(None))
        assert (answer["notices_delivered"], answer["notices_failed"]) == (0, 0)
        assert state(sql, account_with_a_notice) == [("allowance_75", False, False, 0, False)]

    def test_a_run_stops_at_the_first_failure_and_gives_back_what_it_did_not_try(
        self, ledger, make_account, sql, webhook, account_with_a_notice
    ):
        second, third = cross_75_percent(ledger, make_account, 2)
        webhook.statuses = [200, 500]
        answer = run_maintenance(ledger, settings_for(webhook.url))
        assert (answer["notices_delivered"], answer["notices_failed"]) == (1, 1)
        assert len(webhook.received) == 2
        assert state(sql, account_with_a_notice) == [("allowance_75", True, False, 1, True)]
        failed, untried = sorted([state(sql, second), state(sql, third)], key=lambda rows: -rows[0][3])
        assert failed == [("allowance_75", False, False, 1, True)]  # waits its backoff
        assert untried == [("allowance_75", False, False, 0, False)]  # its attempt back, due again now
        answer = run_maintenance(ledger, settings_for(webhook.url))
        assert answer["notices_delivered"] == 1 and len(webhook.received) == 3

    def test_the_tenth_failed_attempt_gives_a_notice_up(self, ledger, sql, webhook, account_with_a_notice):
        sql("UPDATE creditgate.notices SET attempts = 9 WHERE account_id = %s", account_with_a_notice)
        webhook.statuses = [500]
        run_maintenance(ledger, settings_for(webhook.url))
        assert state(sql, account_with_a_notice) == [("allowance_75", False, True, 10, True)]
        sql("UPDATE creditgate.notices SET next_attempt_at = now() WHERE account_id = %s", account_with_a_notice)
        run_maintenance(ledger, settings_for(webhook.url))
        assert len(webhook.received) == 1

    def test_a_notice_of_a_period_that_is_over_is_not_sent(self, ledger, sql, webhook, account_with_a_notice):
        sql(
            "UPDATE creditgate.accounts SET period_start = period_start + interval '1 second' WHERE id = %s",
            account_with_a_notice,
        )
        answer = run_maintenance(ledger, settings_for(webhook.url))
        assert (answer["notices_delivered"], answer["notices_failed"]) == (0, 0) and webhook.received == []
        assert state(sql, account_with_a_notice) == [("allowance_75", False, True, 0, False)]

    def test_two_leases_at_once_take_different_notices(self, ledger, make_account, dsn, account_with_a_notice):
        import psycopg

        cross_75_percent(ledger, make_account, 2)
        with psycopg.connect(dsn) as first:  # a lease whose run has not committed yet
            held = first.execute("SELECT public.creditgate_lease_notices('{\"limit\": 1}')").fetchone()[0]
            others = ledger.lease_notices(10)  # does not wait for it, and skips what it holds
            first.commit()
        assert len(held["notices"]) == 1 and len(others) == 2
        assert {n["id"] for n in others}.isdisjoint({n["id"] for n in held["notices"]})


class TestSettings:
    def test_a_webhook_needs_a_secret(self):
        with pytest.raises(ValueError, match="CREDITGATE_NOTICES_WEBHOOK_SECRET"):
            Settings(environment="test", notices_webhook_url="https://app.example.com/hooks")

    def test_a_url_must_be_one(self):
        with pytest.raises(ValueError, match="not a URL"):
            Settings(environment="test", notices_webhook_url="https://[::1", notices_webhook_secret=SECRET)
        with pytest.raises(ValueError, match="with a host"):
            Settings(environment="test", notices_webhook_url="mailto:ops@example.com", notices_webhook_secret=SECRET)

    def test_production_posts_over_https_only(self):
        with pytest.raises(ValueError, match="must be https"):
            Settings(
                environment="production", notices_webhook_url="http://app.example.com/h", notices_webhook_secret=SECRET
            )
