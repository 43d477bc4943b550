"""One Settings object for every function, read from the environment once per cold start.

The ecosystem's own variable names where they exist (DATABASE_URL, SUPABASE_*, STRIPE_*,
CRON_SECRET); CREDITGATE_ for the rest. Any of them may instead name where its value
lives in AWS: <NAME>_SECRET_ARN (Secrets Manager) or <NAME>_PARAM (SSM Parameter Store).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


def _alias(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CREDITGATE_", extra="ignore", populate_by_name=True)

    environment: Literal["development", "test", "production"] = "production"
    database_url: str | None = Field(None, validation_alias=_alias("DATABASE_URL"))
    supabase_url: str | None = Field(None, validation_alias=_alias("SUPABASE_URL"))
    # SUPABASE_SERVICE_KEY: the name older Supabase guides (and hand-rolled setups) use.
    supabase_service_role_key: str | None = Field(
        None, validation_alias=AliasChoices(*_alias("SUPABASE_SERVICE_ROLE_KEY").choices, "SUPABASE_SERVICE_KEY")
    )
    supabase_jwt_secret: str | None = Field(None, validation_alias=_alias("SUPABASE_JWT_SECRET"))
    stripe_secret_key: str | None = Field(None, validation_alias=_alias("STRIPE_SECRET_KEY"))
    stripe_webhook_secret: str | None = Field(None, validation_alias=_alias("STRIPE_WEBHOOK_SECRET"))
    stripe_api_base: str | None = None  # a Stripe-compatible test server; never set in production
    cron_secret: str | None = Field(None, validation_alias=_alias("CRON_SECRET"))
    # Threshold notices are posted here after each maintenance run, signed with the secret.
    notices_webhook_url: str | None = None
    notices_webhook_secret: str | None = None

    # Plain keys, or "sha256:<hex>" digests so the real keys need not sit in the environment.
    service_keys: str = ""
    port: int = 8000
    payments: Literal["stripe", "simulated"] | None = None
    # "monitor": the emergency switch. The gate allows what it would deny (saying what it
    # would have said); usage is still recorded, as debt where credits are short.
    enforcement: Literal["enforce", "monitor"] = "enforce"
    allowed_origins: str = ""
    public_url: str = "http://127.0.0.1:8000"
    jwks_url: str | None = None
    jwt_audience: str = "authenticated"
    # How many proxies in front of us append to X-Forwarded-For; 0 = use the socket peer
    # (API Gateway and Mangum already give the real client address there).
    trusted_proxy_hops: int = Field(0, ge=0, le=5)
    max_body_bytes: int = 1_048_576
    db_pool_max: int = Field(10, ge=1, le=200)
    # Transaction-mode poolers (Supavisor :6543, PgBouncer) cannot keep prepared statements.
    db_prepared_statements: bool | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # <NAME>_SECRET_ARN / <NAME>_PARAM win over a plain <NAME>: a reference is set on
        # purpose, a plain value may be a leftover default.
        from functions.core.aws_settings import AwsReferenceSource

        return init_settings, AwsReferenceSource(settings_cls), env_settings, dotenv_settings, file_secret_settings

    @model_validator(mode="after")
    def _refuse_weak_secrets_outside_development(self) -> Settings:
        if self.environment == "production":
            for key in self.service_key_list:
                if not key.startswith("sha256:") and len(key) < 24:
                    raise ValueError("CREDITGATE_SERVICE_KEYS: keys must be at least 24 characters")
            if self.cron_secret is not None and len(self.cron_secret) < 16:
                raise ValueError("CRON_SECRET must be at least 16 characters")
            if self.notices_webhook_url and not self.notices_webhook_url.startswith("https://"):
                raise ValueError("CREDITGATE_NOTICES_WEBHOOK_URL must be https://")
        if self.notices_webhook_url:
            _check_webhook_url(self.notices_webhook_url)
            if len(self.notices_webhook_secret or "") < 16:
                raise ValueError("CREDITGATE_NOTICES_WEBHOOK_SECRET (at least 16 characters) signs the notices webhook")
        return self

    @property
    def service_key_list(self) -> list[str]:
        return [k.strip() for k in self.service_keys.split(",") if k.strip()]

    @property
    def service_key_digests(self) -> list[bytes]:
        digests = []
        for key in self.service_key_list:
            if key.startswith("sha256:"):
                digests.append(bytes.fromhex(key.removeprefix("sha256:")))
            else:
                digests.append(hashlib.sha256(key.encode()).digest())
        return digests

    @property
    def allowed_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.allowed_origins.split(",") if o.strip()]

    @property
    def resolved_jwks_url(self) -> str | None:
        if self.jwks_url:
            return self.jwks_url
        if self.supabase_url:
            return self.supabase_url.rstrip("/") + "/auth/v1/.well-known/jwks.json"
        return None


def _check_webhook_url(url: str) -> None:
    # urllib, not httpx: settings load in every function, the HTTP client only where it posts.
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as error:
        raise ValueError(f"CREDITGATE_NOTICES_WEBHOOK_URL is not a URL: {error}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("CREDITGATE_NOTICES_WEBHOOK_URL must be an http(s) URL with a host")


@lru_cache
def get_settings() -> Settings:
    return Settings()
