"""What happens outside the API: the customer paying, periods renewing, refunds, disputes.

Tests call these methods to move the account the way Stripe would; each returns the
events Stripe would send for it (snapshots, oldest first), ready to be signed and posted
to a webhook endpoint.
"""

from __future__ import annotations

import copy
from typing import Any

from . import stripe_billing_objects as billing_objects
from . import stripe_objects as objects
from .stripe_billing_api import StripeEndpoints


class StripeFlows(StripeEndpoints):
    # ================================================================= time

    def advance(self, seconds: int) -> list[dict[str, Any]]:
        """Move the clock forward; open Checkout Sessions past `expires_at` expire.

        Returns the `checkout.session.expired` events this caused. Subscriptions do not
        renew on their own: call `renew_subscription` for each period.
        """
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._clock += int(seconds)
            return [
                self._expire_session(session)
                for session in reversed(self._all("checkout.session"))
                if session["status"] == "open" and session["expires_at"] <= self._clock
            ]

    # ================================================================= checkout flows

    def complete_checkout(
        self,
        session_id: str,
        *,
        async_payment: bool = False,
        email: str = "customer@example.com",
        name: str | None = "Test Customer",
    ) -> list[dict[str, Any]]:
        """The customer pays: returns the events Stripe would send for it.

        Payment mode: `[checkout.session.completed]` (PaymentIntent + Charge created, with
        `payment_intent_data.metadata`). Subscription mode: `[checkout.session.completed,
        customer.subscription.created, invoice.paid]`. With `async_payment` (a bank
        debit), the session completes with `payment_status="unpaid"` and only
        `checkout.session.completed` is returned; settle it with `succeed_async_payment`
        or `fail_async_payment`.
        """
        with self._lock:
            session = self._find("checkout.session", session_id)
            if session["status"] != "open":
                raise ValueError(f"{session_id} is {session['status']}, not open")
            self._tick()
            private = self._session_private[session_id]
            customer_id = session["customer"]
            if customer_id is None and (session["mode"] == "subscription" or session["customer_creation"] == "always"):
                customer_id = self._new_customer(email=session["customer_email"] or email, name=name)["id"]
            if customer_id is not None:
                customer = self._objects[customer_id]
                email, name = customer["email"] or email, customer["name"] or name
            else:
                email = session["customer_email"] or email
            session.update(
                status="complete",
                customer=customer_id,
                url=None,
                customer_details=objects.customer_details(email, name),
            )
            follow_up: list[dict[str, Any]] = []
            if session["mode"] == "payment":
                pi, _ = self._new_payment(
                    amount=session["amount_total"],
                    currency=session["currency"],
                    customer=customer_id,
                    metadata=private["payment_intent_metadata"],
                    description=private["payment_intent_description"],
                    email=email,
                    name=name,
                    settled=not async_payment,
                    method="us_bank_account" if async_payment else "card",
                )
                session["payment_intent"] = pi["id"]
                session["payment_status"] = "unpaid" if async_payment else "paid"
            elif session["mode"] == "subscription":
                sub, inv = self._start_subscription(session, customer_id, async_payment)
                session.update(subscription=sub["id"], invoice=inv["id"])
                session["payment_status"] = "unpaid" if async_payment else "paid"
                created = self._emit("customer.subscription.created", sub)
                follow_up = [created]
                if not async_payment:
                    follow_up.append(self._invoice_paid_events(inv))
            else:
                session["setup_intent"] = self.ids.new("seti")
            completed = self._emit("checkout.session.completed", session)
            return [completed, *follow_up]

    def _start_subscription(
        self, session: dict[str, Any], customer_id: str, pending: bool
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        now = self._clock
        private = self._session_private[session["id"]]
        lines = self._session_lines[session["id"]]
        rec = lines[0]["price"]["recurring"]
        period_end = objects.add_interval(now, rec["interval"], rec["interval_count"], now)
        sub_id = self.ids.new("sub")
        items = [
            billing_objects.subscription_item(
                self.ids.new("si"),
                now,
                subscription=sub_id,
                p=self._objects[line["price"]["id"]],
                quantity=line["quantity"],
                period_start=now,
                period_end=period_end,
            )
            for line in lines
        ]
        sub = billing_objects.subscription(
            sub_id,
            now,
            customer=customer_id,
            currency=session["currency"],
            items=items,
            metadata=dict(private["subscription_metadata"]),
            status="incomplete" if pending else "active",
            latest_invoice=None,
            description=private["subscription_description"],
            legacy=self.legacy_fields,
        )
        self._put(sub)
        inv = self._new_invoice(
            sub,
            billing_reason="subscription_create",
            line_period=(now, period_end),
            invoice_period=(now, now),
            outcome="pending" if pending else "paid",
        )
        sub["latest_invoice"] = inv["id"]
        return sub, inv

    def succeed_async_payment(self, session_id: str) -> list[dict[str, Any]]:
        """The delayed payment settles: `[checkout.session.async_payment_succeeded, ...]`.

        For subscription mode `customer.subscription.updated` (now active) and
        `invoice.paid` follow.
        """
        with self._lock:
            session = self._async_session(session_id)
            self._tick()
            events = []
            if session["mode"] == "payment":
                self._settle_payment(session["payment_intent"], succeeded=True)
            else:
                sub = self._objects[session["subscription"]]
                inv = self._objects[session["invoice"]]
                self._settle_payment(self._invoice_pi(inv), succeeded=True)
                self._mark_invoice_paid(inv)
                before = copy.deepcopy(sub)
                sub["status"] = "active"
                events = [
                    self._emit_update("customer.subscription.updated", before, sub),
                    self._invoice_paid_events(inv),
                ]
            session["payment_status"] = "paid"
            return [self._emit("checkout.session.async_payment_succeeded", session), *events]

    def fail_async_payment(self, session_id: str) -> list[dict[str, Any]]:
        """The delayed payment fails: `[checkout.session.async_payment_failed]`."""
        with self._lock:
            session = self._async_session(session_id)
            self._tick()
            if session["mode"] == "payment":
                self._settle_payment(session["payment_intent"], succeeded=False)
            else:
                inv = self._objects[session["invoice"]]
                self._settle_payment(self._invoice_pi(inv), succeeded=False)
                self._emit("invoice.payment_failed", inv)
            return [self._emit("checkout.session.async_payment_failed", session)]

    def _async_session(self, session_id: str) -> dict[str, Any]:
        session = self._find("checkout.session", session_id)
        if session["status"] != "complete" or session["payment_status"] != "unpaid":
            raise ValueError(f"{session_id} has no payment awaiting settlement")
        pi_id = session["payment_intent"] or (
            session["invoice"] and self._invoice_pi(self._objects[session["invoice"]])
        )
        if not pi_id or self._objects[pi_id]["status"] != "processing":
            raise ValueError(f"{session_id} has no payment awaiting settlement")
        return session

    def _invoice_pi(self, inv: dict[str, Any]) -> str:
        return next(p["payment"]["payment_intent"] for p in self._all("invoice_payment") if p["invoice"] == inv["id"])

    def expire_checkout(self, session_id: str) -> list[dict[str, Any]]:
        """The session times out unpaid: `[checkout.session.expired]`."""
        with self._lock:
            session = self._find("checkout.session", session_id)
            self._tick()
            return [self._expire_session(session)]

    # ================================================================= subscription flows

    def renew_subscription(self, sub_id: str, *, payment_succeeds: bool = True) -> list[dict[str, Any]]:
        """The billing period ends: the clock moves to the period end if it is earlier.

        Returns `[customer.subscription.updated, invoice.paid]` (billing_reason
        `subscription_cycle`; the new period is on `lines.data[0].period` and the items),
        or `[customer.subscription.updated, invoice.payment_failed]` with status
        `past_due` when the payment fails, or `[customer.subscription.deleted]` when the
        subscription was set to cancel at this period end.
        """
        with self._lock:
            sub = self._find("subscription", sub_id)
            if sub["status"] in ("canceled", "incomplete", "incomplete_expired"):
                raise ValueError(f"{sub_id} is {sub['status']} and does not renew")
            first = sub["items"]["data"][0]
            start, end = first["current_period_start"], first["current_period_end"]
            if self._clock < end:
                self._clock = end
            else:
                self._tick()
            if sub["cancel_at"] is not None and sub["cancel_at"] <= end:
                return [self._cancel_now(sub, reason="cancellation_requested", at=sub["cancel_at"])]
            before = copy.deepcopy(sub)
            rec = first["price"]["recurring"]
            new_end = objects.add_interval(end, rec["interval"], rec["interval_count"], sub["billing_cycle_anchor"])
            for item in sub["items"]["data"]:
                item.update(current_period_start=end, current_period_end=new_end)
            billing_objects.sync_legacy_periods(sub, self.legacy_fields)
            inv = self._new_invoice(
                sub,
                billing_reason="subscription_cycle",
                line_period=(end, new_end),
                invoice_period=(start, end),
                outcome="paid" if payment_succeeds else "failed",
            )
            sub["latest_invoice"] = inv["id"]
            sub["status"] = "active" if payment_succeeds else "past_due"
            updated = self._emit_update("customer.subscription.updated", before, sub)
            if payment_succeeds:
                return [updated, self._invoice_paid_events(inv)]
            return [updated, self._emit("invoice.payment_failed", inv)]

    def update_subscription_price(self, sub_id: str, price_id: str) -> list[dict[str, Any]]:
        """Switch the first item to another recurring price (no proration is modelled).

        Returns `[customer.subscription.updated]` with `previous_attributes.items`.
        """
        with self._lock:
            sub = self._find("subscription", sub_id)
            item_id = sub["items"]["data"][0]["id"]
            return self._events_of(
                self.api_update_subscription,
                {"items": [{"id": item_id, "price": price_id}]},
                sub_id,
            )

    def cancel_subscription(self, sub_id: str, *, at_period_end: bool = False) -> list[dict[str, Any]]:
        """Cancel now (`[customer.subscription.deleted]`) or at period end
        (`[customer.subscription.updated]` with `cancel_at_period_end=true`)."""
        with self._lock:
            sub = self._find("subscription", sub_id)
            if sub["status"] in ("canceled", "incomplete_expired"):
                raise ValueError(f"{sub_id} is already {sub['status']}")
            if at_period_end:
                return self._events_of(self.api_update_subscription, {"cancel_at_period_end": "true"}, sub_id)
            self._tick()
            return [self._cancel_now(sub, reason="cancellation_requested")]

    def _events_of(self, endpoint: Any, params: dict[str, Any], object_id: str) -> list[dict[str, Any]]:
        """Run an API endpoint from Python; returns the events it emitted (a StripeApiError
        it raises surfaces to the test as-is)."""
        first = len(self._events)
        endpoint(params, object_id)
        return copy.deepcopy(self._events[first:])

    # ================================================================= after-payment flows

    def refund(self, charge_id: str, amount: int | None = None, *, reason: str | None = None) -> list[dict[str, Any]]:
        """Refund (e.g. from the Dashboard): `[charge.refunded]`, cumulative `amount_refunded`."""
        with self._lock:
            charge = self._find("charge", charge_id)
            self._tick()
            _, event = self._refund_charge(charge, amount, reason=reason, metadata={})
            return [event]

    def dispute(self, charge_id: str, *, amount: int | None = None, reason: str = "fraudulent") -> list[dict[str, Any]]:
        """The cardholder disputes the charge: `[charge.dispute.created]`."""
        with self._lock:
            charge = self._find("charge", charge_id)
            if charge["disputed"]:
                raise ValueError(f"{charge_id} is already disputed")
            now = self._tick()
            dispute = objects.dispute(
                self.ids.new("dp"),
                now,
                amount=amount or charge["amount"],
                currency=charge["currency"],
                charge=charge_id,
                payment_intent=charge["payment_intent"],
                reason=reason,
            )
            self._put(dispute)
            charge["disputed"] = True
            return [self._emit("charge.dispute.created", dispute)]
