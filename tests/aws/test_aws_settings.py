"""Settings read from Secrets Manager and SSM Parameter Store (<NAME>_SECRET_ARN,
<NAME>_PARAM), once per cold start, with boto3 loaded only when needed."""

from __future__ import annotations

import json
import sys

import boto3
import pytest
from pydantic_settings.exceptions import SettingsError

from functions.core.settings import Settings, get_settings


def test_a_plain_string_secret_is_the_value_and_wins_over_the_plain_variable(secretsmanager, monkeypatch):
    arn = secretsmanager.create_secret(Name="creditgate/db", SecretString="postgresql://u:p@db:5432/app")["ARN"]
    monkeypatch.setenv("DATABASE_URL", "postgresql://leftover@localhost/old")
    monkeypatch.setenv("DATABASE_URL_SECRET_ARN", arn)

    assert Settings().database_url == "postgresql://u:p@db:5432/app"


def test_a_json_secret_holds_several_settings_under_their_variable_names(secretsmanager, monkeypatch):
    document = {
        "CRON_SECRET": "cron-secret-from-json-0123",
        "STRIPE_WEBHOOK_SECRET": "whsec_from_json",
        "CREDITGATE_SERVICE_KEYS": "cg_key_one_0123456789abcdef,cg_key_two_0123456789abcdef",
    }
    arn = secretsmanager.create_secret(Name="creditgate/app", SecretString=json.dumps(document))["ARN"]
    for name in document:
        monkeypatch.setenv(f"{name}_SECRET_ARN", arn)

    settings = Settings()

    assert settings.cron_secret == "cron-secret-from-json-0123"
    assert settings.stripe_webhook_secret == "whsec_from_json"
    assert settings.service_key_list == ["cg_key_one_0123456789abcdef", "cg_key_two_0123456789abcdef"]


def test_a_json_secret_is_fetched_once_for_all_the_settings_it_holds(secretsmanager, monkeypatch):
    document = {"CRON_SECRET": "cron-secret-0123456789", "SUPABASE_JWT_SECRET": "jwt-secret"}
    arn = secretsmanager.create_secret(Name="creditgate/shared", SecretString=json.dumps(document))["ARN"]
    monkeypatch.setenv("CRON_SECRET_SECRET_ARN", arn)
    monkeypatch.setenv("SUPABASE_JWT_SECRET_SECRET_ARN", arn)
    calls = []
    real_client = boto3.client

    def counting_client(service, *args, **kwargs):
        client = real_client(service, *args, **kwargs)
        client.meta.events.register("before-call.secrets-manager.GetSecretValue", lambda **_: calls.append(1))
        return client

    monkeypatch.setattr(boto3, "client", counting_client)
    settings = Settings()
    assert (settings.cron_secret, settings.supabase_jwt_secret) == ("cron-secret-0123456789", "jwt-secret")
    assert len(calls) == 1


def test_an_ssm_secure_string_is_read_decrypted(ssm, monkeypatch):
    ssm.put_parameter(Name="/creditgate/prod/jwt", Value="jwt-secret-in-ssm", Type="SecureString")
    ssm.put_parameter(Name="/creditgate/prod/service-keys", Value="cg_ssm_key_0123456789abcdef", Type="SecureString")
    monkeypatch.setenv("SUPABASE_JWT_SECRET_PARAM", "/creditgate/prod/jwt")
    monkeypatch.setenv("CREDITGATE_SERVICE_KEYS_PARAM", "/creditgate/prod/service-keys")

    settings = Settings()

    assert settings.supabase_jwt_secret == "jwt-secret-in-ssm"
    assert settings.service_key_list == ["cg_ssm_key_0123456789abcdef"]


def test_the_region_of_an_arn_is_used(aws, monkeypatch):
    remote = boto3.client("secretsmanager", region_name="us-west-2")
    arn = remote.create_secret(Name="creditgate/stripe", SecretString="sk_test_remote")["ARN"]
    monkeypatch.setenv("STRIPE_SECRET_KEY_SECRET_ARN", arn)

    assert Settings().stripe_secret_key == "sk_test_remote"


def test_a_json_secret_without_the_setting_names_the_variable_not_the_values(secretsmanager, monkeypatch):
    arn = secretsmanager.create_secret(Name="creditgate/other", SecretString='{"OTHER": "s3cr3t-value"}')["ARN"]
    monkeypatch.setenv("CRON_SECRET_SECRET_ARN", arn)

    with pytest.raises(SettingsError) as caught:
        Settings()
    assert "CRON_SECRET_SECRET_ARN" in str(caught.value) and "s3cr3t-value" not in str(caught.value)


def test_an_unreadable_reference_is_a_clear_error(aws, monkeypatch):
    monkeypatch.setenv("DATABASE_URL_PARAM", "/creditgate/missing")
    with pytest.raises(SettingsError, match="DATABASE_URL_PARAM: cannot read /creditgate/missing"):
        Settings()


def test_two_references_for_one_setting_are_refused(secretsmanager, ssm, monkeypatch):
    arn = secretsmanager.create_secret(Name="creditgate/cron", SecretString="cron-secret-0123456789")["ARN"]
    ssm.put_parameter(Name="/creditgate/cron", Value="cron-secret-9876543210", Type="SecureString")
    monkeypatch.setenv("CRON_SECRET_SECRET_ARN", arn)
    monkeypatch.setenv("CRON_SECRET_PARAM", "/creditgate/cron")
    with pytest.raises(SettingsError, match="set only one of"):
        Settings()


def test_values_are_read_once_per_cold_start(secretsmanager, monkeypatch):
    arn = secretsmanager.create_secret(Name="creditgate/rotating", SecretString="cron-secret-first-000")["ARN"]
    monkeypatch.setenv("CRON_SECRET_SECRET_ARN", arn)

    assert get_settings().cron_secret == "cron-secret-first-000"
    secretsmanager.put_secret_value(SecretId=arn, SecretString="cron-secret-second-00")
    assert get_settings().cron_secret == "cron-secret-first-000"  # a warm instance keeps its values
    get_settings.cache_clear()  # what a new cold start does
    assert get_settings().cron_secret == "cron-secret-second-00"


def test_boto3_is_imported_only_when_a_reference_is_set(aws, monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)  # any `import boto3` now fails
    monkeypatch.setenv("CRON_SECRET", "plain-cron-secret-0123")
    assert Settings().cron_secret == "plain-cron-secret-0123"

    monkeypatch.setenv("CRON_SECRET_PARAM", "/creditgate/cron")
    with pytest.raises(ImportError):
        Settings()
