"""`creditgate dev` (what `make dev` runs): it serves, and stopping it stops its database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from functions.core.database import free_port


def test_sigterm_stops_the_server_and_its_embedded_database(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"CREDITGATE_PORT": str(port)}
    process = subprocess.Popen(
        [sys.executable, "-m", "functions.core.cli", "dev"],
        cwd=tmp_path,
        env=env | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        stdout=subprocess.DEVNULL,
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
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        assert not pid_file.exists(), "the embedded PostgreSQL is still running"
    finally:
        if process.poll() is None:
            process.kill()
        if pid_file.exists():  # do not leave a server behind when the test fails
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)
