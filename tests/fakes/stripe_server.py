"""A local Stripe-compatible HTTP server for tests: `FakeStripe`.

Point the real client at it and the adapter's requests, retries, idempotency keys and
error handling all run for real::

    with FakeStripe() as fake:
        client = stripe.StripeClient(fake.api_key, base_addresses={"api": fake.url})
        price = fake.create_price(2000, "usd", recurring="month")
        session = client.v1.checkout.sessions.create(params={...})
        events = fake.complete_checkout(session.id)       # what Stripe would send
        payload, headers = fake.webhook(events[0], "whsec_test")

What is modelled: customers, products, prices, Checkout Sessions (payment, subscription
and setup mode; hosted and embedded), their completion (sync and async payment
methods), PaymentIntents and Charges, subscriptions with renewals, price changes and
cancellation, invoices and invoice payments, refunds, disputes, events. Out of scope:
taxes, discounts, trials, prorations, Connect, payment methods.
"""

from __future__ import annotations

import base64
import copy
import html
import json
import logging
import re
import threading
import traceback
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from . import stripe_wire as wire
from .stripe_billing_api import ROUTES
from .stripe_flows import StripeFlows
from .stripe_wire import StripeApiError, form_fingerprint, parse_form

log = logging.getLogger(__name__)

_COMPILED_ROUTES = [(m, re.compile(f"^{p}$"), name) for m, p, name in ROUTES]
_IDEMPOTENCY_TTL = 24 * 3600


@dataclass
class _Fault:
    status: int
    error: StripeApiError
    method: str | None
    path: str | None
    times: int


class FakeStripe(StripeFlows):
    """An in-process Stripe test-mode account behind a real HTTP socket on 127.0.0.1.

    Args:
        api_key: the only secret key the server accepts.
        api_version: stamped on events; defaults to the installed stripe-python's version.
        start_time: initial value of the fake clock (Unix seconds); defaults to now.
        tick: seconds the clock moves on every mutation, so that successive objects and
            events have strictly increasing `created` (0 freezes the clock).
        legacy_fields: also emit fields Stripe removed in 2025-03-31.basil
            (`Subscription.current_period_*`, `Invoice.subscription/charge/payment_intent`,
            `Charge.invoice`, `lines.data[].price`). Set False to prove an adapter reads
            only the current shapes (`items.data[].current_period_*`, `invoice.parent`).
        seed: makes generated ids reproducible.
    """

    def __init__(
        self,
        *,
        api_key: str = "sk_test_creditgate_fake_0000000000",
        api_version: str | None = None,
        start_time: int | None = None,
        tick: int = 1,
        legacy_fields: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            api_version=api_version,
            start_time=start_time,
            tick=tick,
            legacy_fields=legacy_fields,
            seed=seed,
        )
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self._idempotency: dict[str, dict[str, Any]] = {}
        self._faults: list[_Fault] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ================================================================= lifecycle

    def start(self) -> FakeStripe:
        if self._server is not None:
            return self

        # A subclass per server, so each handler knows its own fake.
        class Handler(_Handler):
            fake = self

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        # A short poll interval keeps stop() (and so each test's teardown) fast.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-stripe",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeStripe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base address for `StripeClient(base_addresses={"api": url})`."""
        if self._server is None:
            raise RuntimeError("FakeStripe is not started; call start() or use it as a context manager")
        return self.base_url

    def client(self, **kwargs: Any) -> Any:
        """A `stripe.StripeClient` pointed at this server (kwargs go to the constructor)."""
        import stripe

        kwargs.setdefault("base_addresses", {"api": self.url})
        return stripe.StripeClient(self.api_key, **kwargs)

    # ================================================================= inspection

    def get(self, object_id: str) -> dict[str, Any]:
        """A copy of any stored object (customer, price, session, event, ...) by id."""
        with self._lock:
            if object_id not in self._objects:
                raise KeyError(object_id)
            return copy.deepcopy(self._objects[object_id])

    def objects(self, object_type: str) -> list[dict[str, Any]]:
        """Copies of all objects of a type (`"customer"`, `"checkout.session"`...), oldest first."""
        with self._lock:
            return [copy.deepcopy(self._objects[i]) for i in self._order[object_type]]

    def line_items(self, session_id: str) -> list[dict[str, Any]]:
        with self._lock:
            self._find("checkout.session", session_id)
            return copy.deepcopy(self._session_lines[session_id])

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event so far, oldest first, including incidental ones (`charge.succeeded`...)."""
        with self._lock:
            return copy.deepcopy(self._events)

    def take_events(self) -> list[dict[str, Any]]:
        """Events created since the last call, oldest first: what webhooks would deliver.

        Driving helpers also return the events of their flow; a test that delivers both
        delivers some twice, which a correct webhook handler must tolerate anyway.
        """
        with self._lock:
            taken, self._outbox = self._outbox, []
            return copy.deepcopy(taken)

    # ================================================================= setup helpers

    def create_product(
        self,
        name: str = "Test product",
        *,
        id: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"name": name, "metadata": metadata or {}}
        if id:
            params["id"] = id
        with self._lock:
            return self.api_create_product(params)

    def create_price(
        self,
        unit_amount: int,
        currency: str = "usd",
        *,
        recurring: str | dict[str, Any] | None = None,
        product: str | None = None,
        id: str | None = None,
        lookup_key: str | None = None,
        nickname: str | None = None,
        metadata: dict[str, str] | None = None,
        active: bool = True,
    ) -> dict[str, Any]:
        """Create a price without HTTP. `recurring` is an interval ("month") or a dict.

        `id` lets fixtures use stable ids (`price_pro_monthly`); the real API always
        generates them. Without `product`, a product named after the nickname is made.
        """
        params: dict[str, Any] = {
            "unit_amount": unit_amount,
            "currency": currency,
            "metadata": metadata or {},
            "active": "true" if active else "false",
        }
        if isinstance(recurring, str):
            params["recurring"] = {"interval": recurring}
        elif recurring is not None:
            params["recurring"] = {k: str(v) for k, v in recurring.items()}
        if product is not None:
            params["product"] = product
        else:
            params["product_data"] = {"name": nickname or f"Product for {id or 'price'}"}
        for key, value in (("lookup_key", lookup_key), ("nickname", nickname)):
            if value is not None:
                params[key] = value
        with self._lock:
            price, new_product = self._price_from(params, "", active_default=True)
            if id:
                price["id"] = id
            return copy.deepcopy(self._store_price(price, new_product))

    def create_customer(
        self,
        email: str | None = None,
        *,
        name: str | None = None,
        metadata: dict[str, str] | None = None,
        id: str | None = None,
    ) -> dict[str, Any]:
        with self._lock:
            self._tick()
            return copy.deepcopy(self._new_customer(email=email, name=name, metadata=metadata or {}, id=id))

    # ================================================================= webhooks

    @staticmethod
    def event_bytes(event: dict[str, Any]) -> bytes:
        return wire.event_bytes(event)

    @staticmethod
    def sign_payload(payload: bytes | str, secret: str, timestamp: int | None = None) -> str:
        return wire.sign_payload(payload, secret, timestamp)

    def webhook(
        self, event: dict[str, Any], secret: str, *, timestamp: int | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers of Stripe's POST delivering `event` to an endpoint."""
        payload = wire.event_bytes(event)
        return payload, {
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": wire.sign_payload(payload, secret, timestamp),
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        }

    # ================================================================= failures

    def inject_error(
        self,
        status: int = 500,
        *,
        message: str = "An unknown error occurred",
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        method: str | None = None,
        path: str | None = None,
        times: int = 1,
        should_retry: bool | None = None,
    ) -> None:
        """Answer the next `times` matching requests with an error instead.

        `path` matches a prefix (`"/v1/checkout/sessions"`). The failure happens before
        the endpoint runs, so nothing changes and no idempotent result is saved: the
        client's retry with the same Idempotency-Key then succeeds, as with Stripe.
        stripe-python retries 409 and 5xx (and whatever `Stripe-Should-Retry: true`
        marks) only when built with `max_network_retries` > 0; StripeClient's default
        is no retry.
        """
        if type is None:
            type = "api_error" if status >= 500 else "card_error" if status == 402 else "invalid_request_error"
        headers = {}
        if should_retry is not None:
            headers["Stripe-Should-Retry"] = "true" if should_retry else "false"
        error = StripeApiError(status, message, type=type, code=code, param=param, headers=headers)
        with self._lock:
            self._faults.append(_Fault(status, error, method and method.upper(), path, times))

    def _take_fault(self, method: str, path: str) -> StripeApiError | None:
        for fault in self._faults:
            if (fault.method in (None, method)) and (fault.path is None or path.startswith(fault.path)):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault.error
        return None

    # ================================================================= HTTP

    def _authenticate(self, header: str | None) -> None:
        if not header:
            raise StripeApiError(
                401,
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for "
                "details, or we can help at https://support.stripe.com/.",
            )
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() == "basic":
            try:
                credential = base64.b64decode(credential).decode("utf-8").split(":", 1)[0]
            except (ValueError, UnicodeDecodeError):
                credential = ""
        elif scheme.lower() != "bearer":
            credential = ""
        if credential != self.api_key:
            masked = credential[:8] + "*" * max(len(credential) - 12, 0) + credential[-4:]
            raise StripeApiError(401, f"Invalid API Key provided: {masked}")

    def _dispatch(self, method: str, raw_path: str, headers: Any, body: str) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(raw_path)
        path = parts.path
        key = headers.get("Idempotency-Key") if method == "POST" else None
        raw = body if method == "POST" else parts.query
        with self._lock:
            request_id = self.ids.new("req")
            out_headers = {
                "Request-Id": request_id,
                "Stripe-Version": headers.get("Stripe-Version") or self.api_version,
            }
            if method == "GET" and path.startswith("/c/pay/"):
                return self._checkout_page(path[len("/c/pay/") :], out_headers)
            record: dict[str, Any] = {
                "method": method,
                "path": path,
                "params": None,
                "idempotency_key": key,
                "stripe_version": headers.get("Stripe-Version"),
                "request_id": request_id,
                "replayed": False,
            }
            try:
                self._authenticate(headers.get("Authorization"))
                params = parse_form(raw)
                record["params"] = params
                if key:
                    key = key.strip()
                    out_headers["Idempotency-Key"] = key
                    saved = self._saved_response(key, method, path, raw)
                    if saved is not None:
                        record.update(status=saved["status"], replayed=True)
                        self.requests.append(record)
                        out_headers.update({"Idempotent-Replayed": "true", "Original-Request": saved["request_id"]})
                        return saved["status"], out_headers, saved["body"]
                fault = self._take_fault(method, path)
                if fault is not None:
                    raise fault
                handler, args = self._route(method, path)
                self._current_request = (request_id, key)
                try:
                    answer = handler(params, **args)
                finally:
                    self._current_request = (None, None)
                status, payload = 200, json.dumps(answer, indent=2).encode("utf-8")
                if key:
                    self._idempotency[key] = {
                        "method": method,
                        "path": path,
                        "fingerprint": form_fingerprint(raw),
                        "status": status,
                        "body": payload,
                        "request_id": request_id,
                        "at": self._clock,
                    }
            except StripeApiError as error:
                status = error.status
                payload = json.dumps(error.body(request_id), indent=2).encode("utf-8")
                out_headers.update(error.headers)
            except Exception as exc:  # a bug in the fake: make it loud, answer like Stripe would
                log.error("FakeStripe failed on %s %s:\n%s", method, path, traceback.format_exc())
                status = 500
                payload = json.dumps(
                    StripeApiError(500, f"FakeStripe internal error: {exc!r}", type="api_error", headers={}).body(
                        request_id
                    )
                ).encode("utf-8")
                out_headers["Stripe-Should-Retry"] = "false"
            record["status"] = status
            self.requests.append(record)
            return status, out_headers, payload

    def _saved_response(self, key: str, method: str, path: str, raw: str) -> dict[str, Any] | None:
        saved = self._idempotency.get(key)
        if saved is None:
            return None
        if self._clock - saved["at"] > _IDEMPOTENCY_TTL:
            del self._idempotency[key]
            return None
        if (saved["method"], saved["path"]) != (method, path):
            raise StripeApiError(
                400,
                f"Keys for idempotent requests can only be used for the same endpoint they were "
                f"first used for ('{saved['method']} {saved['path']}' vs '{method} {path}'). Try "
                f"using a key other than '{key}' if you meant to execute a different request.",
                type="idempotency_error",
            )
        if saved["fingerprint"] != form_fingerprint(raw):
            raise StripeApiError(
                400,
                f"Keys for idempotent requests can only be used with the same parameters they "
                f"were first used with. Try using a key other than '{key}' if you meant to "
                f"execute a different request.",
                type="idempotency_error",
            )
        return saved

    def _route(self, method: str, path: str) -> tuple[Any, dict[str, str]]:
        for route_method, pattern, name in _COMPILED_ROUTES:
            match = pattern.match(path)
            if match and route_method == method:
                return getattr(self, name), match.groupdict()
        raise StripeApiError(
            404,
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
            f"or we can help at https://support.stripe.com/.",
        )

    def _checkout_page(self, session_id: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        session = self._objects.get(session_id)
        if session is None or session["object"] != "checkout.session":
            return (
                404,
                {**headers, "Content-Type": "text/html; charset=utf-8"},
                b"<h1>Not found</h1>",
            )
        amount = (
            wire.format_amount(session["amount_total"], session["currency"])
            if session["amount_total"] is not None
            else "-"
        )
        page = (
            f"<!doctype html><title>FakeStripe Checkout</title>"
            f"<h1>FakeStripe Checkout</h1><p id='session'>{html.escape(session_id)}</p>"
            f"<p id='status'>{html.escape(session['status'])}</p>"
            f"<p id='amount'>{html.escape(amount)}</p>"
        )
        return 200, {**headers, "Content-Type": "text/html; charset=utf-8"}, page.encode("utf-8")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's pooled connections expect
    # Headers and body go out in separate writes; without TCP_NODELAY each keep-alive
    # request waits ~40 ms on delayed ACKs.
    disable_nagle_algorithm = True
    timeout = 30
    fake: FakeStripe

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8") if length else ""
        status, headers, payload = self.fake._dispatch(method, self.path, self.headers, body)
        self.send_response(status)
        headers.setdefault("Content-Type", "application/json")
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fake-stripe: " + format, *args)
