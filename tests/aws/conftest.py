"""AWS through moto: credentials that cannot reach AWS, and every call mocked."""

from __future__ import annotations

import pytest

from functions.core.settings import get_settings

REGION = "eu-west-1"
# Every variable a setting may be read from, with or without a reference suffix: the
# tests set exactly the ones they mean.
SETTING_VARIABLES = (
    "DATABASE_URL",
    "SUPABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_JWT_SECRET",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "CRON_SECRET",
    "CREDITGATE_SERVICE_KEYS",
)


@pytest.fixture
def aws(monkeypatch):
    from moto import mock_aws

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    for name in SETTING_VARIABLES:
        for suffix in ("", "_SECRET_ARN", "_PARAM"):
            monkeypatch.delenv(name + suffix, raising=False)
    get_settings.cache_clear()
    with mock_aws():
        yield
    get_settings.cache_clear()


@pytest.fixture
def secretsmanager(aws):
    import boto3

    return boto3.client("secretsmanager", region_name=REGION)


@pytest.fixture
def ssm(aws):
    import boto3

    return boto3.client("ssm", region_name=REGION)
