"""Credentials: service keys stored hashed, Supabase JWTs by JWKS (asymmetric) or the legacy secret."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient

from functions.core.auth import client_ip
from functions.core.settings import Settings
from functions.local import build_app
from tests.api.helpers import assert_problem, bearer


@pytest.fixture(scope="module")
def signing_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def jwks_url(signing_key):
    """A project's JWKS endpoint, as Supabase serves it at /auth/v1/.well-known/jwks.json."""
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(signing_key.public_key()))
    document = json.dumps({"keys": [{**public, "kid": "test-key", "alg": "ES256", "use": "sig"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/auth/v1/.well-known/jwks.json"
    server.shutdown()


def es256_token(key, sub: str, **overrides) -> str:
    now = int(time.time())
    claims = {"sub": sub, "aud": "authenticated", "role": "authenticated", "iat": now, "exp": now + 600, **overrides}
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": "test-key"})


class TestJwks:
    def test_asymmetric_tokens_verify_against_the_projects_jwks(self, settings, ledger, signing_key, jwks_url):
        app = build_app(settings=settings.model_copy(update={"jwks_url": jwks_url}), ledger=ledger)
        user = str(uuid.uuid4())
        with TestClient(app) as client:
            ok = client.get("/v1/balance", headers=bearer(es256_token(signing_key, user)))
            assert ok.status_code == 200, ok.text
            assert ok.json()["account_id"] == user
            stranger = ec.generate_private_key(ec.SECP256R1())
            assert_problem(
                client.get("/v1/balance", headers=bearer(es256_token(stranger, user))), 401, "unauthenticated"
            )
            expired = es256_token(signing_key, user, exp=int(time.time()) - 10)
            assert_problem(client.get("/v1/balance", headers=bearer(expired)), 401, "unauthenticated")

    def test_a_token_for_the_service_role_is_not_a_user(self, client):
        from tests.conftest import JWT_SECRET

        now = int(time.time())
        token = jwt.encode({"sub": "x", "aud": "authenticated", "role": "service_role", "exp": now + 60}, JWT_SECRET)
        assert_problem(client.get("/v1/balance", headers=bearer(token)), 401, "unauthenticated")


class TestUserTokenSubjects:
    @pytest.mark.parametrize("sub", ["", "x" * 129, "\u00fcmlaut", "a b", "guest:abc12345"])
    def test_a_subject_that_cannot_be_an_account_id_is_401(self, client, sql, sub):
        from tests.api.helpers import user_token

        before = sql("SELECT count(*) FROM creditgate.accounts")
        response = client.get("/v1/balance", headers=bearer(user_token(sub)))
        assert_problem(response, 401, "unauthenticated")
        assert sql("SELECT count(*) FROM creditgate.accounts") == before

    def test_an_email_the_account_cannot_hold_is_dropped(self, client, sql):
        from tests.api.helpers import user_token

        user = str(uuid.uuid4())
        response = client.get("/v1/balance", headers=bearer(user_token(user, email="a\x00@example.com")))
        assert response.status_code == 200, response.text
        assert sql("SELECT email FROM creditgate.accounts WHERE id = %s", user) == [(None,)]


class TestSettingsNames:
    def test_the_older_supabase_service_key_name_is_understood(self, monkeypatch):
        monkeypatch.delenv("SUPABASE_SERVICE_ROLE_KEY", raising=False)
        monkeypatch.setenv("SUPABASE_SERVICE_KEY", "service-key-from-an-older-guide")
        assert Settings(_env_file=None).supabase_service_role_key == "service-key-from-an-older-guide"
        monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "the-current-name-wins")
        assert Settings(_env_file=None).supabase_service_role_key == "the-current-name-wins"


class TestServiceKeys:
    def test_keys_may_be_configured_as_digests(self, settings, ledger):
        digest = "sha256:" + hashlib.sha256(b"a-long-service-key-for-this-test").hexdigest()
        app = build_app(settings=settings.model_copy(update={"service_keys": digest}), ledger=ledger)
        with TestClient(app) as client:
            assert (
                client.get("/v1/admin/metrics", headers=bearer("a-long-service-key-for-this-test")).status_code == 200
            )
            assert_problem(client.get("/v1/admin/metrics", headers=bearer("another-key")), 401, "unauthenticated")

    def test_production_refuses_short_keys(self):
        with pytest.raises(ValueError):
            Settings(environment="production", service_keys="short")

    def test_basic_auth_is_refused(self, client):
        assert_problem(
            client.get("/v1/admin/metrics", headers={"Authorization": "Basic dXNlcjpwYXNz"}), 401, "unauthenticated"
        )


class TestClientIp:
    def test_only_the_trusted_hop_is_believed(self):
        settings = Settings(environment="test", trusted_proxy_hops=1)
        assert client_ip("10.0.0.1", "6.6.6.6, 203.0.113.7", settings) == "203.0.113.7"
        assert client_ip("10.0.0.1", None, settings) == "10.0.0.1"
        assert client_ip("10.0.0.1", "6.6.6.6", Settings(environment="test")) == "10.0.0.1"
        assert client_ip("testclient", None, Settings(environment="test")) is None

    def test_a_guest_without_an_address_is_told_once_in_the_log(self, client, caplog, monkeypatch):
        from functions.core import deps

        monkeypatch.setattr(deps, "_told_no_address", threading.Event())
        with caplog.at_level("WARNING", logger="creditgate.auth"):
            for _ in range(2):  # the test client's peer is "testclient", not an address
                client.get("/v1/entitlements", headers={"X-Session-Id": f"guest-{uuid.uuid4().hex}"})
        told = [r for r in caplog.records if "without a usable client address" in r.getMessage()]
        assert len(told) == 1

    def test_an_ipv6_client_is_its_64_network(self):
        settings = Settings(environment="test")
        assert client_ip("2001:db8:1:2:aaaa::1", None, settings) == "2001:db8:1:2::/64"
        assert client_ip("2001:db8:1:2:ffff:ffff:ffff:ffff", None, settings) == "2001:db8:1:2::/64"
        assert client_ip("2001:db8:1:3::1", None, settings) == "2001:db8:1:3::/64"
        assert client_ip("::ffff:203.0.113.7", None, settings) == "203.0.113.7"
        assert client_ip("64:ff9b::cb00:7107", None, settings) == "203.0.113.7"  # NAT64
        assert client_ip("2002:cb00:7107::1", None, settings) == "203.0.113.7"  # 6to4

    def test_a_proxys_port_is_not_part_of_the_address(self):
        settings = Settings(environment="test", trusted_proxy_hops=1)
        assert client_ip("10.0.0.1", "6.6.6.6, 203.0.113.7:4711", settings) == "203.0.113.7"
        assert client_ip("10.0.0.1", "[2001:db8:1:2::9]:4711", settings) == "2001:db8:1:2::/64"
        assert client_ip("10.0.0.1", "[2001:db8:1:2::9]", settings) == "2001:db8:1:2::/64"
