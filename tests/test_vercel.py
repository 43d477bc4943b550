"""vercel.json: one Python function serving every route, and the maintenance cron."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "vercel.json"


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return json.loads(CONFIG.read_text(encoding="utf-8"))


def destination_file(destination: str) -> Path:
    """The file a rewrite destination names: /api/index -> api/index.py."""
    path = ROOT / destination.lstrip("/")
    return path if path.suffix else path.with_suffix(".py")


def test_vercel_json_parses_and_has_the_sections(config: dict[str, Any]) -> None:
    assert isinstance(config["rewrites"], list) and config["rewrites"]
    assert isinstance(config["crons"], list) and config["crons"]
    assert "builds" not in config, "`builds` disables `functions` (and its maxDuration) on Vercel"
    # No framework preset ("Other"): otherwise Vercel sees fastapi in the dependencies, looks for
    # app.py / main.py / index.py entrypoints, and api/index.py is not the function.
    assert "framework" in config and config["framework"] is None


def test_cron_calls_the_maintenance_path(config: dict[str, Any]) -> None:
    assert [c["path"] for c in config["crons"]] == ["/v1/cron/maintenance"]
    for cron in config["crons"]:
        fields = cron["schedule"].split()
        assert len(fields) == 5, f"not a five-field cron expression: {cron['schedule']!r}"
        assert all(re.fullmatch(r"[0-9*/,\-]+", f) for f in fields), cron["schedule"]


def test_every_rewrite_destination_exists(config: dict[str, Any]) -> None:
    for rewrite in config["rewrites"]:
        target = destination_file(rewrite["destination"])
        assert target.is_file(), f"{rewrite['source']} -> {rewrite['destination']}: {target} does not exist"


def test_the_api_paths_are_rewritten_to_the_app(config: dict[str, Any]) -> None:
    sources = {r["source"]: r["destination"] for r in config["rewrites"]}
    for source in ("/v1/(.*)", "/openapi.json", "/docs"):
        assert sources.get(source) == "/api/index", f"{source} is not rewritten to /api/index"
    # The cron path must be one of the rewritten ones, or the cron hits a 404.
    assert all(c["path"].startswith("/v1/") for c in config["crons"])


def test_function_settings_name_existing_files(config: dict[str, Any]) -> None:
    for pattern, settings in config.get("functions", {}).items():
        assert (ROOT / pattern).is_file(), f"functions entry {pattern} names no file"
        assert 1 <= settings.get("maxDuration", 10) <= 800


def test_entry_point_exports_the_local_app() -> None:
    tree = ast.parse((ROOT / "api" / "index.py").read_text(encoding="utf-8"))
    imports = [
        (node.module, alias.name, alias.asname)
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    ]
    assert ("functions.local", "app", None) in imports, "api/index.py must do `from functions.local import app`"


def test_vercel_installs_the_same_requirements_as_sam() -> None:
    # Vercel's Python runtime installs the root requirements.txt, like `sam build`.
    assert (ROOT / "requirements.txt").is_file()
