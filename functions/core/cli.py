"""`creditgate`: migrate, apply the catalog, reconcile, grant, backfill, and run everything locally."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
import time
from pathlib import Path

STATE_DIR = Path(".creditgate")


def _ledger():
    from functions.core.ledger import build_ledger
    from functions.core.settings import Settings

    return build_ledger(Settings(environment=os.environ.get("CREDITGATE_ENVIRONMENT", "development")))


def cmd_migrate(args: argparse.Namespace) -> int:
    from functions.core.database import migrate

    dsn = os.environ.get("DATABASE_URL")
    if not dsn:
        print("DATABASE_URL is required (a direct connection, not the transaction pooler)", file=sys.stderr)
        return 2
    applied = migrate(dsn)
    print(f"applied: {', '.join(applied) or 'nothing (up to date)'}")
    return 0


def cmd_stripe_sync(args: argparse.Namespace) -> int:
    from functions.core.catalog import load_catalog
    from functions.core.payments.stripe_sync import sync, write_price_ids
    from functions.core.settings import Settings

    settings = Settings(environment=os.environ.get("CREDITGATE_ENVIRONMENT", "development"))
    if not settings.stripe_secret_key:
        print("STRIPE_SECRET_KEY is required", file=sys.stderr)
        return 2
    path = Path(args.catalog)
    results = sync(settings, load_catalog(path))
    for r in results:
        print(f"{r['kind']:4} {r['id']:12} {r['status']:9} {r['price_id']}")
    if args.write:
        write_price_ids(path, results)
        print(f"wrote the price ids into {path}; now run: creditgate catalog apply {path}")
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    from functions.core.database import uninstall

    dsn = os.environ.get("DATABASE_URL")
    if not dsn:
        print("DATABASE_URL is required", file=sys.stderr)
        return 2
    if not args.yes_delete_every_balance:
        print("This deletes every account, balance and history. Add --yes-delete-every-balance.", file=sys.stderr)
        return 2
    uninstall(dsn)
    print("creditgate removed (schema creditgate, public.creditgate_* functions, the auth.users trigger)")
    return 0


def cmd_catalog_apply(args: argparse.Namespace) -> int:
    from functions.core.catalog import apply_catalog

    print(json.dumps(apply_catalog(_ledger(), Path(args.file)), indent=2))
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    result = _ledger().reconcile(args.account)
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


def cmd_grant(args: argparse.Namespace) -> int:
    from functions.core.accounts.schemas import GrantAnswer
    from functions.core.money import to_micro
    from functions.core.present import movement

    answer = _ledger().grant_credits(
        {
            "account_id": args.account,
            "amount": to_micro(args.amount),
            "key": args.key,
            "source": args.source,
            "reason": args.reason,
            "idempotency_key": args.idempotency_key,
        }
    )
    # As POST /v1/accounts/{id}/grants answers: its fields, amounts in credits, a replay said.
    print(json.dumps(GrantAnswer.model_validate(movement(answer)).model_dump(mode="json"), indent=2))
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    """Accounts for the app's existing Supabase users, then (optionally) one grant to every
    account, in batches; running it again creates and grants nothing twice."""
    from functions.core.money import to_micro

    ledger = _ledger()
    created = 0
    while True:
        answer = ledger.rpc("creditgate_backfill_accounts", {"plan": args.plan, "limit": args.batch})
        created += answer["created"]
        if not answer["more"] or answer["created"] == 0:
            break
    print(f"accounts created: {created}")
    if args.grant is None:
        return 0
    request = {"amount": to_micro(args.grant), "key": args.key, "reason": args.reason, "tag": args.tag}
    granted, after = 0, None
    while True:
        answer = ledger.rpc("creditgate_backfill_grant", {**request, "after": after, "limit": args.batch})
        granted += answer["granted"]
        after = answer["last"]
        if not answer["more"]:
            break
    print(f"accounts granted {args.grant} {args.key} ({args.tag}): {granted}")
    return 0


def cmd_supabase_export(args: argparse.Namespace) -> int:
    from functions.core.supabase_export import MIGRATIONS_DIR, differences, export

    if args.check:
        changes = differences()
        print("\n".join(changes) or "supabase/migrations is in sync with sql/")
        return 1 if changes else 0
    changes = export()
    print("\n".join(changes) or "nothing to do")
    print(f"supabase migrations: {MIGRATIONS_DIR}")
    return 0


def _saved_dev_secrets() -> dict[str, str]:
    """What make dev kept in .creditgate/dev.env (NAME=value lines)."""
    path = STATE_DIR / "dev.env"
    if not path.exists():
        return {}
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def _dev_secrets() -> dict[str, str]:
    """Secrets for local runs: the environment wins, else the ones generated last time."""
    saved = _saved_dev_secrets()
    wanted = {
        "CREDITGATE_SERVICE_KEYS": "cg_dev_" + secrets.token_urlsafe(24),
        "CRON_SECRET": secrets.token_urlsafe(24),
        "STRIPE_WEBHOOK_SECRET": "whsec_" + secrets.token_urlsafe(24),
        # Signs the notices posted to CREDITGATE_NOTICES_WEBHOOK_URL, when one is set.
        "CREDITGATE_NOTICES_WEBHOOK_SECRET": secrets.token_urlsafe(24),
        # Signs local users' tokens (`creditgate dev-token USER`), as Supabase's legacy secret does.
        "SUPABASE_JWT_SECRET": secrets.token_urlsafe(32),
    }
    values, local, new = {}, [], []
    for name, fresh in wanted.items():
        if os.environ.get(name):
            values[name] = os.environ[name]
        else:
            values[name] = saved.get(name) or fresh
            local.append(name)
            if name not in saved:
                new.append(name)
    path = STATE_DIR / "dev.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items() if k in local))
    path.chmod(0o600)
    return values | {"_new": ", ".join(new), "_kept": ", ".join(n for n in local if n not in new)}


def cmd_dev_token(args: argparse.Namespace) -> int:
    """A signed-in user's token for `make dev`, signed with its SUPABASE_JWT_SECRET."""
    import jwt

    # Only the secret make dev made: one in the shell may be a deployment's, and a token
    # signed with it would be accepted there.
    secret = _saved_dev_secrets().get("SUPABASE_JWT_SECRET")
    if not secret:
        raise ValueError(
            "no SUPABASE_JWT_SECRET in .creditgate/dev.env: make dev keeps one there unless SUPABASE_JWT_SECRET "
            "is set in its environment (then sign tokens with that secret yourself)"
        )
    if os.environ.get("SUPABASE_JWT_SECRET", secret) != secret:
        raise ValueError("SUPABASE_JWT_SECRET in this shell is not make dev's: unset it to sign a local token")
    now = int(time.time())
    claims = {
        "sub": args.user,
        "role": "authenticated",
        "aud": os.environ.get("CREDITGATE_JWT_AUDIENCE", "authenticated"),
        "iat": now,
        "exp": now + args.hours * 3600,
    }
    if args.email:
        claims["email"] = args.email
    print(jwt.encode(claims, secret, algorithm="HS256"))
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    import uvicorn

    from functions.core.catalog import DEFAULT_CATALOG, apply_catalog
    from functions.core.database import migrate, start_local_postgres

    # uvicorn stops gracefully on SIGTERM and then raises the signal again; as an exception
    # it unwinds through the `finally` below, so the embedded PostgreSQL stops with us.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    STATE_DIR.mkdir(exist_ok=True)
    server = None
    if not os.environ.get("DATABASE_URL"):
        server = start_local_postgres(STATE_DIR / "pgdata")
        os.environ["DATABASE_URL"] = server.dsn
    try:
        migrate(os.environ["DATABASE_URL"])
        found = dict(_dev_secrets())
        new, kept = found.pop("_new"), found.pop("_kept")
        os.environ.update(found)
        os.environ.setdefault("CREDITGATE_ENVIRONMENT", "development")
        port = int(os.environ.get("CREDITGATE_PORT", "8000"))
        os.environ.setdefault("CREDITGATE_PUBLIC_URL", f"http://127.0.0.1:{port}")
        print(json.dumps(apply_catalog(_ledger(), Path(args.catalog or DEFAULT_CATALOG))))
        key = found["CREDITGATE_SERVICE_KEYS"].split(",")[0]
        base = f"http://127.0.0.1:{port}"
        print(
            f"""
creditgate is running at {base}   (API docs: {base}/docs)
  database      {os.environ["DATABASE_URL"]}{"  (embedded, data in .creditgate/pgdata)" if server else ""}
  payments      {os.environ.get("CREDITGATE_PAYMENTS") or ("stripe" if os.environ.get("STRIPE_SECRET_KEY") else "simulated")}
  enforcement   {os.environ.get("CREDITGATE_ENFORCEMENT") or "enforce"}{"  (the emergency switch: running short of credits or quota is allowed and said)" if os.environ.get("CREDITGATE_ENFORCEMENT") == "monitor" else ""}
  service key   {key}
  cron secret   {found["CRON_SECRET"]}
  secrets       new: {new or "none"}; from .creditgate/dev.env: {kept or "none"}
  other commands on this database: DATABASE_URL='{os.environ["DATABASE_URL"]}' .venv/bin/creditgate reconcile
  a user's token (Authorization: Bearer …): .venv/bin/creditgate dev-token demo-user

Try it (gate a chat, then record what it used against the reservation):
  KEY={key}
  curl -s -X PUT {base}/v1/accounts/demo-user -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' -d '{{"plan": "free"}}'
  RES=$(curl -s -X POST {base}/v1/gate -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \\
    -d '{{"account_id": "demo-user", "feature": "chat", "model": "gpt-4o-mini", "estimate": {{"input_tokens": 1200, "max_output_tokens": 800}}, "idempotency_key": "demo-1"}}' \\
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["reservation"]["id"])')
  curl -s -X POST {base}/v1/usage -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \\
    -d '{{"reservation_id": "'$RES'", "feature": "chat", "model": "gpt-4o-mini", "usage": {{"input_tokens": 1200, "output_tokens": 350}}, "idempotency_key": "demo-1"}}'
  curl -s '{base}/v1/balance?account_id=demo-user' -H "Authorization: Bearer $KEY"
  curl -s {base}/v1/balance -H "Authorization: Bearer $(.venv/bin/creditgate dev-token demo-user)"
  curl -s -X POST {base}/v1/cron/maintenance -H "Authorization: Bearer {found["CRON_SECRET"]}"
""",
            flush=True,
        )
        # proxy_headers off: nothing proxies a local run, and uvicorn would otherwise take a
        # local client's own X-Forwarded-For as its address (guests' per-IP limits).
        uvicorn.run("functions.local:app", host="127.0.0.1", port=port, log_level="info", proxy_headers=False)
    finally:
        if server:
            server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="creditgate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply sql/ migrations to DATABASE_URL").set_defaults(run=cmd_migrate)
    stripe_cmd = sub.add_parser("stripe", help="Stripe").add_subparsers(dest="action", required=True)
    stripe_sync = stripe_cmd.add_parser("sync", help="the catalog's plans and packs as Stripe products and prices")
    stripe_sync.add_argument("--catalog", default=str(Path(__file__).resolve().parents[2] / "catalog.toml"))
    stripe_sync.add_argument("--write", action="store_true", help="set stripe_price_id in the catalog file")
    stripe_sync.set_defaults(run=cmd_stripe_sync)
    remove = sub.add_parser("uninstall", help="remove creditgate and all its data from DATABASE_URL")
    remove.add_argument("--yes-delete-every-balance", action="store_true")
    remove.set_defaults(run=cmd_uninstall)
    catalog = sub.add_parser("catalog", help="the offer").add_subparsers(dest="action", required=True)
    apply = catalog.add_parser("apply", help="load a catalog file (idempotent)")
    apply.add_argument("file", nargs="?", default=str(Path(__file__).resolve().parents[2] / "catalog.toml"))
    apply.set_defaults(run=cmd_catalog_apply)
    reconcile = sub.add_parser("reconcile", help="check every ledger invariant")
    reconcile.add_argument("--account")
    reconcile.set_defaults(run=cmd_reconcile)
    grant = sub.add_parser("grant", help="grant credits to an account")
    grant.add_argument("account")
    grant.add_argument("amount")
    grant.add_argument("--reason", required=True)
    grant.add_argument("--key", default="credits")
    grant.add_argument("--source", choices=["promo", "adjustment"], default="adjustment")
    # Required, as by the HTTP API: running the command again (after a timeout, say) with
    # the same key grants once.
    grant.add_argument("--idempotency-key", required=True, help="the same key again is a replay, not a new grant")
    grant.set_defaults(run=cmd_grant)
    backfill = sub.add_parser("backfill", help="accounts for existing Supabase users, and a grant to every account")
    backfill.add_argument("--plan", default="free", help="plan of the accounts created (default free)")
    backfill.add_argument("--grant", metavar="AMOUNT", help="also grant this many credits to every account")
    backfill.add_argument("--key", default="credits")
    backfill.add_argument("--reason", help="why (with --grant)")
    backfill.add_argument("--tag", help="names this grant: running it again with the same tag grants nothing twice")
    backfill.add_argument("--batch", type=int, default=500)
    backfill.set_defaults(run=cmd_backfill)
    supa = sub.add_parser("supabase-export", help="regenerate supabase/migrations from sql/")
    supa.add_argument("--check", action="store_true", help="only report differences (exit 1 if any)")
    supa.set_defaults(run=cmd_supabase_export)
    token = sub.add_parser("dev-token", help="a signed-in user's token for `make dev`")
    token.add_argument("user", help="the user's id (their account id)")
    token.add_argument("--email")
    token.add_argument("--hours", type=int, default=24)
    token.set_defaults(run=cmd_dev_token)
    dev = sub.add_parser("dev", help="run everything locally: embedded PostgreSQL and all functions")
    dev.add_argument("--catalog")
    dev.set_defaults(run=cmd_dev)
    args = parser.parse_args(argv)
    if getattr(args, "grant", None) is not None and not (args.reason and args.tag):
        parser.error("--grant needs --reason and --tag")
    from functions.core.errors import ProblemError

    try:
        return args.run(args)
    except (ProblemError, ValueError, OSError) as error:
        # An operator's mistake (no database configured, an unknown plan, "abc" credits, a
        # missing file): one line that says what, not a traceback.
        detail = getattr(error, "fields", {}) or ""
        print(
            f"creditgate {args.command}: {error}{' ' + json.dumps(detail, default=str) if detail else ''}",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
