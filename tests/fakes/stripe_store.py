"""State of the fake Stripe account and the operations both the HTTP API and tests drive.

One re-entrant lock guards everything: the HTTP server handles connections on threads,
but requests are applied one at a time, as if Stripe had serialised them. Objects are
stored as plain dicts; every answer and every event carries a deep copy, so a snapshot
inside an event never changes afterwards (events are snapshots in real Stripe too).
"""

from __future__ import annotations

import copy
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from . import stripe_billing_objects as billing_objects
from . import stripe_objects as objects
from .stripe_wire import (
    IdFactory,
    StripeApiError,
    as_int,
    as_list,
    format_amount,
    invalid,
    no_such,
)

try:  # The fake speaks the API version of the installed SDK when there is one.
    import stripe as _stripe

    DEFAULT_API_VERSION: str = _stripe.api_version
except ImportError:  # pragma: no cover - the fake itself only needs the standard library
    DEFAULT_API_VERSION = "2026-10-28.endive"


class StripeStore:
    def __init__(
        self,
        *,
        api_version: str | None = None,
        start_time: int | None = None,
        tick: int = 1,
        legacy_fields: bool = True,
        seed: int | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self._clock = int(start_time if start_time is not None else time.time())
        self.tick = tick
        self.legacy_fields = legacy_fields
        self.api_version = api_version or DEFAULT_API_VERSION
        self.ids = IdFactory(seed)
        self.base_url = "http://127.0.0.1"
        self._objects: dict[str, dict[str, Any]] = {}
        self._order: dict[str, list[str]] = defaultdict(list)
        # What Stripe keeps but does not show on the object (session line items, the
        # payment_intent_data / subscription_data to apply on completion).
        self._session_lines: dict[str, list[dict[str, Any]]] = {}
        self._session_private: dict[str, dict[str, Any]] = {}
        self._events: list[dict[str, Any]] = []
        self._outbox: list[dict[str, Any]] = []
        self._current_request: tuple[str | None, str | None] = (None, None)

    # ----------------------------------------------------------------- clock

    @property
    def clock(self) -> int:
        """The fake's "now" (Unix seconds). It only moves forward."""
        return self._clock

    @clock.setter
    def clock(self, value: int) -> None:
        with self._lock:
            if int(value) < self._clock:
                raise ValueError(f"the clock only moves forward ({value} < {self._clock})")
            self._clock = int(value)

    def _tick(self) -> int:
        # Each mutation happens at a later second than the one before, so objects and
        # events created by successive operations have strictly increasing `created`.
        self._clock += self.tick
        return self._clock

    # ----------------------------------------------------------------- storage

    def _put(self, obj: dict[str, Any]) -> dict[str, Any]:
        if obj["id"] in self._objects:
            raise StripeApiError(
                400,
                f"A resource with the ID '{obj['id']}' already exists.",
                code="resource_already_exists",
                param="id",
            )
        self._objects[obj["id"]] = obj
        self._order[obj["object"]].append(obj["id"])
        return obj

    def _find(self, kind: str, object_id: Any, param: str = "id") -> dict[str, Any]:
        obj = self._objects.get(object_id) if isinstance(object_id, str) else None
        if obj is None or obj["object"] != kind:
            raise no_such(kind, str(object_id), param)
        return obj

    def _product_name(self, product_id: str) -> str:
        product = self._objects.get(product_id)
        return product["name"] if product else product_id

    # ----------------------------------------------------------------- events

    def _emit(self, type: str, obj: dict[str, Any], previous: dict[str, Any] | None = None) -> dict[str, Any]:
        request_id, idempotency_key = self._current_request
        event = objects.event(
            self.ids.new("evt"),
            self._clock,
            type=type,
            obj=obj,
            api_version=self.api_version,
            previous_attributes=previous,
            request_id=request_id,
            idempotency_key=idempotency_key,
        )
        self._put(event)
        self._events.append(event)
        self._outbox.append(event)
        return copy.deepcopy(event)

    def _emit_update(self, type: str, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any] | None:
        changed = objects.previous_attributes(before, after)
        return self._emit(type, after, changed) if changed else None

    # ----------------------------------------------------------------- rendering

    def _render(self, obj: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(obj)
        for index, path in enumerate(as_list(params.get("expand", []), "expand")):
            if not isinstance(path, str):
                raise invalid("Invalid string", param=f"expand[{index}]")
            if path.count(".") >= 4:
                raise invalid(
                    f"You cannot expand more than 4 levels of a property. Property: {path}",
                    param=f"expand[{index}]",
                )
            out = self._expand(out, path.split("."), path)
        return out

    def _includable(self, obj: dict[str, Any], key: str) -> dict[str, Any] | None:
        """Properties Stripe leaves out unless asked for with `expand`."""
        if obj.get("object") == "checkout.session" and key == "line_items":
            return objects.list_object(
                copy.deepcopy(self._session_lines.get(obj["id"], [])),
                f"/v1/checkout/sessions/{obj['id']}/line_items",
            )
        if obj.get("object") == "charge" and key == "refunds":
            refunds = [r for r in self._all("refund") if r["charge"] == obj["id"]]
            return objects.list_object(copy.deepcopy(refunds), f"/v1/charges/{obj['id']}/refunds")
        return None

    def _expand(self, node: Any, parts: list[str], path: str) -> Any:
        if not parts or node is None:
            return node
        key, rest = parts[0], parts[1:]
        if isinstance(node, dict) and node.get("object") == "list" and key == "data":
            node["data"] = [self._expand(item, rest, path) for item in node["data"]]
            return node
        if not isinstance(node, dict):
            raise invalid(f"This property cannot be expanded ({path}).")
        included = self._includable(node, key)
        if included is not None:
            value: Any = included
        elif key not in node:
            raise invalid(f"This property cannot be expanded ({path}).")
        else:
            value = node[key]
            if isinstance(value, str):
                target = self._objects.get(value)
                if target is None or target["object"] == "event":
                    raise invalid(f"This property cannot be expanded ({path}).")
                value = copy.deepcopy(target)
        node[key] = self._expand(value, rest, path)
        return node

    # ----------------------------------------------------------------- lists

    def _all(self, kind: str) -> list[dict[str, Any]]:
        """Objects of a type, newest first (Stripe's list order)."""
        return [self._objects[i] for i in reversed(self._order[kind])]

    def _list(
        self,
        kind: str,
        params: dict[str, Any],
        url: str,
        keep: Callable[[dict[str, Any]], bool] | None = None,
        items: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        limit = as_int(params.get("limit", 10), "limit", minimum=1)
        if limit > 100:
            raise invalid("This value must be less than or equal to 100.", param="limit")
        rows = items if items is not None else self._all(kind)
        if keep is not None:
            rows = [row for row in rows if keep(row)]
        ids = [row["id"] for row in rows]
        if "starting_after" in params:
            cursor = params["starting_after"]
            if cursor not in ids:
                raise no_such(kind, str(cursor), "starting_after")
            rows = rows[ids.index(cursor) + 1 :]
            page, has_more = rows[:limit], len(rows) > limit
        elif "ending_before" in params:
            cursor = params["ending_before"]
            if cursor not in ids:
                raise no_such(kind, str(cursor), "ending_before")
            rows = rows[: ids.index(cursor)]
            page, has_more = rows[-limit:], len(rows) > limit
        else:
            page, has_more = rows[:limit], len(rows) > limit
        listing = objects.list_object(copy.deepcopy(page), url, has_more)
        return self._render(listing, {"expand": params.get("expand", [])})

    # ----------------------------------------------------------------- payments

    def _new_customer(
        self,
        *,
        email: str | None,
        name: str | None = None,
        description: str | None = None,
        phone: str | None = None,
        metadata: dict[str, str] | None = None,
        id: str | None = None,
    ) -> dict[str, Any]:
        customer = objects.customer(
            id or self.ids.new("cus"),
            self._clock,
            email=email,
            name=name,
            description=description,
            phone=phone,
            metadata=metadata or {},
        )
        self._put(customer)
        self._emit("customer.created", customer)
        return customer

    def _new_payment(
        self,
        *,
        amount: int,
        currency: str,
        customer: str | None,
        metadata: dict[str, str],
        description: str | None,
        email: str | None,
        name: str | None,
        settled: bool,
        method: str = "card",
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        pi_id, ch_id = self.ids.new("pi"), self.ids.new("ch")
        pi = objects.payment_intent(
            pi_id,
            self._clock,
            amount=amount,
            currency=currency,
            customer=customer,
            metadata=dict(metadata),
            description=description,
            status="succeeded" if settled else "processing",
            latest_charge=ch_id,
            payment_method_types=[method],
            client_secret=self.ids.secret(f"{pi_id}_secret_"),
        )
        # A PaymentIntent's charge starts with a copy of the intent's metadata.
        ch = objects.charge(
            ch_id,
            self._clock,
            amount=amount,
            currency=currency,
            customer=customer,
            payment_intent=pi_id,
            metadata=dict(metadata),
            description=description,
            status="succeeded" if settled else "pending",
            email=email,
            name=name,
            method=method,
            receipt_url=f"{self.base_url}/receipts/{ch_id}",
        )
        self._put(pi)
        self._put(ch)
        if settled:
            self._emit("payment_intent.succeeded", pi)
            self._emit("charge.succeeded", ch)
        else:
            self._emit("payment_intent.processing", pi)
            self._emit("charge.pending", ch)
        return pi, ch

    def _settle_payment(self, pi_id: str, succeeded: bool) -> None:
        pi = self._objects[pi_id]
        ch = self._objects[pi["latest_charge"]]
        if succeeded:
            pi.update(status="succeeded", amount_received=pi["amount"])
            ch.update(status="succeeded", paid=True, captured=True, amount_captured=ch["amount"])
            self._emit("payment_intent.succeeded", pi)
            self._emit("charge.succeeded", ch)
        else:
            pi.update(
                status="requires_payment_method",
                last_payment_error={
                    "code": "payment_method_provider_decline",
                    "message": "The payment was declined.",
                    "type": "card_error",
                },
            )
            ch.update(
                status="failed",
                failure_code="generic_decline",
                failure_message="The payment was declined.",
            )
            self._emit("payment_intent.payment_failed", pi)
            self._emit("charge.failed", ch)

    # ----------------------------------------------------------------- billing

    def _new_invoice(
        self,
        sub: dict[str, Any],
        *,
        billing_reason: str,
        line_period: tuple[int, int],
        invoice_period: tuple[int, int],
        outcome: str,
    ) -> dict[str, Any]:
        """An invoice for the subscription's items, with its PaymentIntent and Charge.

        `outcome` is "paid", "pending" (async method still processing) or "failed".
        `invoice_period` follows Stripe's quirk: a subscription invoice's own period_start/
        period_end look back one period (equal to creation time for the first invoice);
        the period being paid for is on the lines.
        """
        now = self._clock
        customer = self._objects[sub["customer"]]
        invoice_id = self.ids.new("in")
        lines = [
            billing_objects.invoice_line(
                self.ids.new("il"),
                invoice=invoice_id,
                subscription=sub,
                item=item,
                product_name=self._product_name(item["price"]["product"]),
                period_start=line_period[0],
                period_end=line_period[1],
                legacy=self.legacy_fields,
            )
            for item in sub["items"]["data"]
        ]
        total = sum(line["amount"] for line in lines)
        pi, ch = self._new_payment(
            amount=total,
            currency=sub["currency"],
            customer=customer["id"],
            metadata={},
            description="Subscription creation" if billing_reason == "subscription_create" else "Subscription update",
            email=customer["email"],
            name=customer["name"],
            settled=outcome == "paid",
            method="card" if outcome != "pending" else "us_bank_account",
        )
        if outcome == "failed":
            self._settle_payment(pi["id"], succeeded=False)
        number = f"{customer['invoice_prefix']}-{customer['next_invoice_sequence']:04d}"
        customer["next_invoice_sequence"] += 1
        inv = billing_objects.invoice(
            invoice_id,
            now,
            number=number,
            customer=customer,
            subscription=sub,
            lines=lines,
            billing_reason=billing_reason,
            period_start=invoice_period[0],
            period_end=invoice_period[1],
            status="paid" if outcome == "paid" else "open",
            paid_at=now if outcome == "paid" else None,
            payment_intent=pi["id"],
            charge=ch["id"],
            hosted_url=f"{self.base_url}/i/{invoice_id}",
            legacy=self.legacy_fields,
        )
        self._put(inv)
        self._put(
            billing_objects.invoice_payment(
                self.ids.new("inpay"),
                now,
                invoice=inv,
                payment_intent=pi["id"],
                paid_at=now if outcome == "paid" else None,
            )
        )
        if self.legacy_fields:
            ch["invoice"] = invoice_id
        self._emit("invoice.created", inv)
        self._emit("invoice.finalized", inv)
        return inv

    def _mark_invoice_paid(self, inv: dict[str, Any]) -> None:
        now = self._clock
        inv.update(status="paid", amount_paid=inv["amount_due"], amount_remaining=0, auto_advance=False)
        inv["status_transitions"]["paid_at"] = now
        if self.legacy_fields:
            inv["paid"] = True
        for payment in self._all("invoice_payment"):
            if payment["invoice"] == inv["id"]:
                payment.update(status="paid", amount_paid=inv["amount_paid"])
                payment["status_transitions"]["paid_at"] = now

    def _invoice_paid_events(self, inv: dict[str, Any]) -> dict[str, Any]:
        paid = self._emit("invoice.paid", inv)
        self._emit("invoice.payment_succeeded", inv)
        return paid

    def _cancel_now(self, sub: dict[str, Any], *, reason: str, at: int | None = None) -> dict[str, Any]:
        """End a subscription; returns the `customer.subscription.deleted` event."""
        end = at if at is not None else self._clock
        sub.update(status="canceled", ended_at=end)
        if at is None or sub["canceled_at"] is None:
            # A scheduled cancellation keeps the time it was requested; an immediate one
            # is canceled now.
            sub["canceled_at"] = self._clock
        if sub["cancellation_details"]["reason"] is None:
            sub["cancellation_details"]["reason"] = reason
        return self._emit("customer.subscription.deleted", sub)

    # ----------------------------------------------------------------- sessions

    def _expire_session(self, session: dict[str, Any]) -> dict[str, Any]:
        if session["status"] != "open":
            raise invalid(
                f'Only Checkout Sessions with a status in ["open"] can be expired. This '
                f'Checkout Session has a status of "{session["status"]}".',
            )
        session.update(status="expired", url=None)
        return self._emit("checkout.session.expired", session)

    def _refund_charge(
        self,
        charge: dict[str, Any],
        amount: Any,
        *,
        reason: str | None,
        metadata: dict[str, str],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Refund part or all of a charge; returns (refund, `charge.refunded` event)."""
        if charge["disputed"]:
            raise invalid(
                f"Charge {charge['id']} has been charged back; cannot issue a refund.",
                code="charge_disputed",
            )
        if charge["status"] == "failed":
            raise invalid(f"Charge {charge['id']} has failed and cannot be refunded.")
        remaining = charge["amount"] - charge["amount_refunded"]
        if remaining <= 0:
            raise invalid(
                f"Charge {charge['id']} has already been refunded.",
                code="charge_already_refunded",
            )
        amount = remaining if amount is None else as_int(amount, "amount", minimum=1)
        if amount > remaining:
            raise invalid(
                f"Refund amount ({format_amount(amount, charge['currency'])}) is greater "
                f"than unrefunded amount on charge "
                f"({format_amount(remaining, charge['currency'])})",
                param="amount",
            )
        before = copy.deepcopy(charge)
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        refund = objects.refund(
            self.ids.new("re"),
            self._clock,
            amount=amount,
            currency=charge["currency"],
            charge=charge["id"],
            payment_intent=charge["payment_intent"],
            metadata=metadata,
            reason=reason,
        )
        self._put(refund)
        event = self._emit("charge.refunded", charge, objects.previous_attributes(before, charge))
        self._emit("refund.created", refund)
        return refund, event
