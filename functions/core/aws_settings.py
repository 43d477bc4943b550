"""Settings whose values live in AWS, so secrets never sit in a function's environment.

For any setting, `<NAME>_SECRET_ARN` names a Secrets Manager secret and `<NAME>_PARAM` an
SSM parameter (SecureString, read with decryption) holding its value, where NAME is the
variable the setting is read from (DATABASE_URL, CRON_SECRET, CREDITGATE_SERVICE_KEYS…).
A secret may be a plain string, or JSON with the variable name as key, so one secret
can hold several settings (it is fetched once).

pydantic-settings' own AWSSecretsManagerSettingsSource reads one JSON secret for the
whole model; per-setting references need this subclass of the same base. Values are
read when Settings is built, i.e. once per cold start (get_settings is cached), and boto3
is imported only if a reference is set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from pydantic_settings import EnvSettingsSource
from pydantic_settings.exceptions import SettingsError

SUFFIXES = {"_SECRET_ARN": "secretsmanager", "_PARAM": "ssm"}


class AwsReferenceSource(EnvSettingsSource):
    def _load_env_vars(self) -> Mapping[str, str | None]:
        references = self._references()
        if not references:
            return {}
        return _fetch(references, self._fold)

    def _fold(self, name: str) -> str:
        return name if self.case_sensitive else name.lower()

    def _references(self) -> dict[str, tuple[str, str, str]]:
        """{env name: (variable holding the reference, service, reference)}."""
        environ = {self._fold(k): (k, v) for k, v in os.environ.items() if v}
        found: dict[str, tuple[str, str, str]] = {}
        for name, field in self.settings_cls.model_fields.items():
            for _, env_name, _ in self._extract_field_info(field, name):
                hits = [
                    (*environ[self._fold(env_name + suffix)], service)
                    for suffix, service in SUFFIXES.items()
                    if self._fold(env_name + suffix) in environ
                ]
                if len(hits) > 1:
                    raise SettingsError(f"set only one of {' and '.join(h[0] for h in hits)}")
                if hits:
                    variable, reference, service = hits[0]
                    found[env_name] = (variable, service, reference)
        return found


def _fetch(references: dict[str, tuple[str, str, str]], fold) -> dict[str, str]:
    import boto3  # only here: most deployments set no reference and skip its import cost
    from botocore.exceptions import BotoCoreError, ClientError

    clients: dict[tuple[str, str | None], Any] = {}
    secrets: dict[str, str] = {}
    values: dict[str, str] = {}
    for env_name, (variable, service, reference) in references.items():
        region = _region(reference)
        if (service, region) not in clients:
            clients[service, region] = boto3.client(service, region_name=region)
        client = clients[service, region]
        try:
            if service == "ssm":
                values[env_name] = client.get_parameter(Name=reference, WithDecryption=True)["Parameter"]["Value"]
                continue
            if reference not in secrets:
                secrets[reference] = _secret_text(client.get_secret_value(SecretId=reference))
        except (BotoCoreError, ClientError) as error:
            # The reference is named, never a value.
            raise SettingsError(f"{variable}: cannot read {reference}: {error}") from error
        values[env_name] = _pick(secrets[reference], env_name, variable, fold)
    return values


def _region(reference: str) -> str | None:
    # An ARN says where it lives (arn:aws:secretsmanager:<region>:…); a name uses the
    # function's own region.
    if reference.startswith("arn:"):
        parts = reference.split(":")
        if len(parts) > 3 and parts[3]:
            return parts[3]
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


def _secret_text(response: Mapping[str, Any]) -> str:
    if response.get("SecretString") is not None:
        return response["SecretString"]
    return bytes(response["SecretBinary"]).decode()


def _pick(text: str, env_name: str, variable: str, fold) -> str:
    """The whole secret, or the entry named like the setting's variable in a JSON secret."""
    try:
        document = json.loads(text)
    except ValueError:
        return text
    if not isinstance(document, dict):
        return text
    for key, value in document.items():
        if fold(str(key)) == env_name:
            return value if isinstance(value, str) else json.dumps(value)
    wanted = variable.removesuffix("_SECRET_ARN").removesuffix("_secret_arn")
    raise SettingsError(f"{variable}: the secret is JSON but has no {wanted!r} key")
