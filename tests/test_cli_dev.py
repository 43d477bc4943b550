"""`creditgate dev` (what `make dev` runs): it serves, its tokens and guests work as a
deployment's would, and stopping it stops its database."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from functions.core.database import free_port


def test_it_serves_users_and_guests_and_sigterm_stops_it_and_its_database(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"CREDITGATE_PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "functions.core.cli", "dev"],
        cwd=tmp_path,
        env=env | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        stdout=(tmp_path / "out.txt").open("w"),
        stderr=subprocess.DEVNULL,
    )
    pid_file = tmp_path / ".creditgate" / "pgdata" / "postmaster.pid"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, "creditgate dev exited before serving"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "creditgate dev did not answer within 120 s"
            time.sleep(0.5)
        assert pid_file.exists()
        base = f"http://127.0.0.1:{port}"
        banner = (tmp_path / "out.txt").read_text()
        assert "cron secret" in banner and "dev-token" in banner
        assert re.search(r"enforcement +enforce\n", banner)

        # A signed-in user, with the token `creditgate dev-token` prints.
        token = subprocess.run(
            [sys.executable, "-m", "functions.core.cli", "dev-token", "dev-user-1", "--email", "a@example.com"],
            cwd=tmp_path,
            env=env | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        balance = httpx.get(f"{base}/v1/balance", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert balance.status_code == 200 and balance.json()["account_id"] == "dev-user-1"

        # Guests: a client's own X-Forwarded-For is not its address (nothing proxies a local run).
        statuses = [
            httpx.post(
                f"{base}/v1/gate",
                json={"feature": "chat"},
                headers={"X-Session-Id": f"dev-guest-{n:04d}", "X-Forwarded-For": f"203.0.113.{n + 1}"},
                timeout=10,
            ).status_code
            for n in range(21)
        ]
        assert statuses == [200] * 20 + [429]

        process.send_signal(signal.SIGTERM)
        process.wait(60)
        assert not pid_file.exists(), "the embedded PostgreSQL is still running"
    finally:
        if process.poll() is None:
            process.kill()
        if pid_file.exists():  # do not leave a server behind when the test fails
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)


def test_dev_token_signs_only_with_make_devs_own_secret(tmp_path, monkeypatch):
    import jwt

    from functions.core import cli

    monkeypatch.setattr(cli, "STATE_DIR", tmp_path)
    monkeypatch.delenv("SUPABASE_JWT_SECRET", raising=False)
    assert cli.main(["dev-token", "someone"]) == 2  # make dev never ran here
    (tmp_path / "dev.env").write_text("SUPABASE_JWT_SECRET=local-secret-0123456789abcdef0123456789\n")
    monkeypatch.setenv("SUPABASE_JWT_SECRET", "a-deployments-secret-0123456789abcdef01")
    assert cli.main(["dev-token", "someone"]) == 2  # not a token a deployment would accept
    monkeypatch.delenv("SUPABASE_JWT_SECRET")
    monkeypatch.setenv("CREDITGATE_JWT_AUDIENCE", "my-app")
    token = _run_capturing(cli, ["dev-token", "someone", "--email", "s@example.com"])
    claims = jwt.decode(token, "local-secret-0123456789abcdef0123456789", algorithms=["HS256"], audience="my-app")
    assert (claims["sub"], claims["role"], claims["email"]) == ("someone", "authenticated", "s@example.com")


def _run_capturing(cli, argv: list[str]) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(argv) == 0
    return out.getvalue().strip()
