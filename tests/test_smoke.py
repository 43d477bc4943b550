from tests.conftest import MICRO


def test_account_gate_usage_roundtrip(ledger, make_account):
    account = make_account("free")
    gate = ledger.gate(
        {
            "account_id": account,
            "feature": "chat",
            "model": "gpt-4o-mini",
            "mode": "reserve",
            "estimate": {"input_tokens": 1000, "max_output_tokens": 1000},
            "idempotency_key": "k1",
        }
    )
    assert gate["allowed"] is True
    usage = ledger.record_usage(
        {
            "account_id": account,
            "reservation_id": gate["reservation"]["id"],
            "feature": "chat",
            "model": "gpt-4o-mini",
            "idempotency_key": "k1",
            "usage": {"input_tokens": 1000, "output_tokens": 500},
        }
    )
    assert usage["cost"] > 0
    assert ledger.reconcile(account)["ok"], ledger.reconcile(account)
    assert ledger.balance(account)["balances"][0]["available"] < 150 * MICRO
