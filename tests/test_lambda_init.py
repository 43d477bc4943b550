"""The entry modules build their app with the cyclic collector paused, and leave it on."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

from functions.core.lambda_init import init_phase

ROOT = Path(__file__).resolve().parents[1]


class TestInitPhase:
    def test_pauses_the_collector_and_turns_it_back_on(self):
        assert gc.isenabled()
        with init_phase():
            assert not gc.isenabled()
        assert gc.isenabled()

    def test_turns_it_back_on_after_an_error(self):
        try:
            with init_phase():
                raise RuntimeError("import failed")
        except RuntimeError:
            pass
        assert gc.isenabled()

    def test_leaves_a_collector_that_was_off_off(self):
        gc.disable()
        try:
            with init_phase():
                pass
            assert not gc.isenabled()
        finally:
            gc.enable()

    def test_an_imported_entry_module_leaves_the_collector_on_and_its_app_frozen(self):
        code = (
            "import gc, functions.gate as g\n"
            "assert gc.isenabled(), 'collector left off'\n"
            "assert gc.get_freeze_count() > 10000, gc.get_freeze_count()\n"
            "assert g.handler is not None\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CREDITGATE_", "DATABASE_URL"))}
        env |= {"DATABASE_URL": "postgresql://unused@127.0.0.1:1/unused", "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-2000:]
