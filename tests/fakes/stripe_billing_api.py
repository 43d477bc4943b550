"""Payment, billing and event endpoints of the fake, and the route table."""

from __future__ import annotations

import copy
import re
from typing import Any

from . import stripe_billing_objects as billing_objects
from . import stripe_objects as objects
from .stripe_api import CheckoutEndpoints
from .stripe_params import (
    EXPAND,
    PAGING,
    PORTAL_SESSION_CREATE,
    REFUND_CREATE,
    SUBSCRIPTION_CANCEL,
    SUBSCRIPTION_ITEM_UPDATE,
    SUBSCRIPTION_UPDATE,
)
from .stripe_wire import (
    StripeApiError,
    apply_metadata,
    as_bool,
    as_dict,
    as_enum,
    as_int,
    as_list,
    check_known,
    invalid,
    missing_param,
    no_such,
)


class StripeEndpoints(CheckoutEndpoints):
    # ----------------------------------------------------------------- billing portal

    def api_create_billing_portal_session(self, params: dict[str, Any]) -> dict[str, Any]:
        check_known(params, PORTAL_SESSION_CREATE)
        if "customer" not in params:
            raise missing_param("customer")
        customer = self._find("customer", params["customer"], "customer")
        return_url = params.get("return_url")
        if return_url is not None and not (isinstance(return_url, str) and re.match(r"^https?://[^\s/]+", return_url)):
            raise invalid("Not a valid URL", param="return_url", code="url_invalid")
        self._tick()
        session = billing_objects.billing_portal_session(
            self.ids.new("bps"), self._clock, customer=customer["id"], return_url=return_url
        )
        return self._render(self._put(session), params)

    # ----------------------------------------------------------------- payments

    def api_retrieve_payment_intent(self, params: dict[str, Any], id: str) -> dict[str, Any]:
        check_known(params, EXPAND | {"client_secret"})
        return self._render(self._find("payment_intent", id), params)

    def api_retrieve_charge(self, params: dict[str, Any], id: str) -> dict[str, Any]:
        check_known(params, EXPAND)
        return self._render(self._find("charge", id), params)

    def api_list_charges(self, params: dict[str, Any]) -> dict[str, Any]:
        check_known(params, PAGING | {"customer", "payment_intent", "transfer_group"})
        filters = ("customer", "payment_intent")
        return self._list(
            "charge",
            params,
            "/v1/charges",
            lambda c: all(params.get(f, c[f]) == c[f] for f in filters),
        )

    def api_create_refund(self, params: dict[str, Any]) -> dict[str, Any]:
        check_known(params, REFUND_CREATE)
        if "charge" in params and "payment_intent" in params:
            raise invalid(
                "You may only specify one of these parameters: charge, payment_intent.",
                param="payment_intent",
            )
        if "charge" in params:
            charge = self._find("charge", params["charge"], "charge")
        elif "payment_intent" in params:
            pi = self._find("payment_intent", params["payment_intent"], "payment_intent")
            if pi["status"] != "succeeded" or not pi["latest_charge"]:
                raise invalid(
                    f"This PaymentIntent ({pi['id']}) does not have a successful charge to refund.",
                    param="payment_intent",
                )
            charge = self._objects[pi["latest_charge"]]
        else:
            raise invalid("One of the following params should be provided for this request: payment_intent or charge.")
        reason = params.get("reason")
        if reason is not None:
            as_enum(reason, "reason", ("duplicate", "fraudulent", "requested_by_customer"))
        metadata = apply_metadata({}, params.get("metadata", {}))
        self._tick()
        refund, _ = self._refund_charge(charge, params.get("amount"), reason=reason, metadata=metadata)
        return self._render(refund, params)

    def api_retrieve_refund(self, params: dict[str, Any], id: str) -> dict[str, Any]:
        check_known(params, EXPAND)
        return self._render(self._find("refund", id), params)

    def api_list_refunds(self, params: dict[str, Any]) -> dict[str, Any]:
        check_known(params, PAGING | {"charge", "payment_intent"})
        filters = ("charge", "payment_intent")
        return self._list(
            "refund",
            params,
            "/v1/refunds",
            lambda r: all(params.get(f, r[f]) == r[f] for f in filters),
        )

    # ----------------------------------------------------------------- billing

    def api_retrieve_subscription(self, params: dict[str, Any], id: str) -> dict[str, Any]:
        check_known(params, EXPAND)
        return self._render(self._find("subscription", id), params)

    def api_list_subscriptions(self, params: dict[str, Any]) -> dict[str, Any]:
        check_known(
            params,
            PAGING
            | {
                "customer",
                "price",
                "plan",
                "status",
                "collection_method",
                "current_period_end",
                "current_period_start",
                "test_clock",
                "automatic_tax",
                "customer_account",
            },
        )
        status = params.get("status")
        if status is not None:
            as_enum(
                status,
                "status",
                (
                    "active",
                    "all",
                    "canceled",
                    "ended",
                    "incomplete",
                    "incomplete_expired",
                    "past_due",
                    "paused",
                    "trialing",
                    "unpaid",
                ),
            )

        def keep(s: dict[str, Any]) -> bool:
            # Without a status filter Stripe lists every subscription that is not canceled.
            if status is None and s["status"] == "canceled":
                return False
            if status not in (None, "all") and s["status"] != status:
                if not (status == "ended" and s["status"] in ("canceled", "incomplete_expired")):
                    return False
            price = params.get("price") or params.get("plan")
            if price and not any(i["price"]["id"] == price for i in s["items"]["data"]):
                return False
            return params.get("customer", s["customer"]) == s["customer"]

        return self._list("subscription", params, "/v1/subscriptions", keep)

    def api_update_subscription(self, params: dict[str, Any], id: str) -> dict[str, Any]:
        check_known(params, SUBSCRIPTION_UPDATE)
        sub = self._find("subscription", id)
        if sub["status"] in ("canceled", "incomplete_expired"):
            extra = set(params) - {"metadata", "cancellation_details", "expand"}
            if extra:
                raise invalid(
                    "A canceled subscription can only update its cancellation_details and metadata.",
                    param=sorted(extra)[0],
                )
        if "cancel_at" in params and "cancel_at_period_end" in params:
            raise invalid(
                "You may only specify one of these parameters: cancel_at, cancel_at_period_end.",
                param="cancel_at",
            )
        if "proration_behavior" in params:
            as_enum(
                params["proration_behavior"],
                "proration_behavior",
                ("always_invoice", "create_prorations", "none"),
            )
        before = copy.deepcopy(sub)
        now = self._tick()
        try:
            self._apply_subscription_update(sub, params, now)
        except StripeApiError:
            sub.clear()
            sub.update(before)
            raise
        self._emit_update("customer.subscription.updated", before, sub)
        return self._render(sub, params)

    def _apply_subscription_update(self, sub: dict[str, Any], params: dict[str, Any], now: int) -> None:
        period_end = sub["items"]["data"][0]["current_period_end"]
        if "metadata" in params:
            sub["metadata"] = apply_metadata(sub["metadata"], params["metadata"])
        if "description" in params:
            sub["description"] = params["description"] or None
        if "cancellation_details" in params:
            details = as_dict(params["cancellation_details"], "cancellation_details")
            for field in ("comment", "feedback"):
                if field in details:
                    sub["cancellation_details"][field] = details[field] or None
        if "cancel_at_period_end" in params:
            cancel = as_bool(params["cancel_at_period_end"], "cancel_at_period_end")
            sub["cancel_at_period_end"] = cancel
            self._schedule_cancel(sub, period_end if cancel else None, now)
        if "cancel_at" in params:
            raw = params["cancel_at"]
            if raw == "":
                at = None
            elif raw in ("min_period_end", "max_period_end", "max_billed_until"):
                at = period_end
            else:
                at = as_int(raw, "cancel_at")
                if at <= now:
                    raise invalid("cancel_at must be in the future.", param="cancel_at")
            self._schedule_cancel(sub, at, now)
        if "items" in params:
            self._update_items(sub, as_list(params["items"], "items"), now)

    def _schedule_cancel(self, sub: dict[str, Any], at: int | None, now: int) -> None:
        sub["cancel_at"] = at
        sub["canceled_at"] = now if at is not None else None
        sub["cancellation_details"]["reason"] = "cancellation_requested" if at else None

    def _update_items(self, sub: dict[str, Any], raw_items: list[Any], now: int) -> None:
        items = sub["items"]["data"]
        period = (items[0]["current_period_start"], items[0]["current_period_end"])
        for index, raw in enumerate(raw_items):
            prefix = f"items[{index}]"
            change = as_dict(raw, prefix)
            check_known(change, SUBSCRIPTION_ITEM_UPDATE, prefix)
            target = None
            if "id" in change:
                target = next((i for i in items if i["id"] == change["id"]), None)
                if target is None:
                    raise invalid(
                        f"The subscription item {change['id']} does not belong to subscription {sub['id']}.",
                        param=f"{prefix}[id]",
                    )
                if as_bool(change.get("deleted", "false"), f"{prefix}[deleted]"):
                    items.remove(target)
                    continue
            price = None
            if "price" in change or "plan" in change:
                field = "price" if "price" in change else "plan"
                price = self._find("price", change[field], f"{prefix}[{field}]")
                if not price["recurring"]:
                    raise invalid(
                        "The price specified is set to `type=one_time` but this field only "
                        "accepts prices with `type=recurring`.",
                        param=f"{prefix}[{field}]",
                    )
                if price["currency"] != sub["currency"]:
                    raise invalid(
                        "The price specified does not match the subscription's currency.",
                        param=f"{prefix}[{field}]",
                    )
            quantity = as_int(change["quantity"], f"{prefix}[quantity]", minimum=0) if "quantity" in change else None
            if target is None:
                if price is None:
                    raise missing_param(f"{prefix}[price]")
                items.append(
                    billing_objects.subscription_item(
                        self.ids.new("si"),
                        now,
                        subscription=sub["id"],
                        p=price,
                        quantity=1 if quantity is None else quantity,
                        period_start=period[0],
                        period_end=period[1],
                    )
                )
                continue
            if price is not None:
                target["price"] = copy.deepcopy(price)
                target["plan"] = objects.plan_from_price(price)
            if quantity is not None:
                target["quantity"] = quantity
            if "metadata" in change:
                target["metadata"] = apply_metadata(target["metadata"], change["metadata"], f"{prefix}[metadata]")
        if not items:
            raise invalid("A subscription must have at least one active plan.", param="items")
        billing_objects.sync_legacy_periods(sub, self.legacy_fields)

    def api_cancel_subscription_now(self, params: dict[str, Any], id: str) -> dict[str, Any]:
        check_known(params, SUBSCRIPTION_CANCEL)
        sub = self._find("subscription", id)
        if sub["status"] in ("canceled", "incomplete_expired"):
            raise no_such("subscription", id)
        details = as_dict(params.get("cancellation_details", {}), "cancellation_details")
        self._tick()
        for field in ("comment", "feedback"):
            if field in details:
                sub["cancellation_details"][field] = details[field] or None
        self._cancel_now(sub, reason="cancellation_requested")
        return self._render(sub, params)

    def api_retrieve_invoice(self, params: dict[str, Any], id: str) -> dict[str, Any]:
        check_known(params, EXPAND)
        return self._render(self._find("invoice", id), params)

    def api_list_invoices(self, params: dict[str, Any]) -> dict[str, Any]:
        check_known(
            params,
            PAGING
            | {
                "customer",
                "subscription",
                "status",
                "collection_method",
                "due_date",
                "customer_account",
            },
        )

        def keep(inv: dict[str, Any]) -> bool:
            sub = inv["parent"]["subscription_details"]["subscription"]
            return (
                params.get("customer", inv["customer"]) == inv["customer"]
                and params.get("subscription", sub) == sub
                and params.get("status", inv["status"]) == inv["status"]
            )

        return self._list("invoice", params, "/v1/invoices", keep)

    def api_retrieve_invoice_payment(self, params: dict[str, Any], id: str) -> dict[str, Any]:
        check_known(params, EXPAND)
        return self._render(self._find("invoice_payment", id), params)

    def api_list_invoice_payments(self, params: dict[str, Any]) -> dict[str, Any]:
        check_known(params, PAGING | {"invoice", "payment", "status"})
        payment = as_dict(params.get("payment", {}), "payment")

        def keep(row: dict[str, Any]) -> bool:
            return (
                params.get("invoice", row["invoice"]) == row["invoice"]
                and params.get("status", row["status"]) == row["status"]
                and all(row["payment"].get(k) == v for k, v in payment.items())
            )

        return self._list("invoice_payment", params, "/v1/invoice_payments", keep)

    # ----------------------------------------------------------------- events

    def api_retrieve_event(self, params: dict[str, Any], id: str) -> dict[str, Any]:
        check_known(params, EXPAND)
        return self._render(self._find("event", id), params)

    def api_list_events(self, params: dict[str, Any]) -> dict[str, Any]:
        check_known(params, PAGING | {"type", "types", "delivery_success"})
        wanted = as_list(params["types"], "types") if "types" in params else None
        pattern = params.get("type")

        def keep(event: dict[str, Any]) -> bool:
            if wanted is not None and event["type"] not in wanted:
                return False
            if pattern is not None:
                # `type` accepts one `*` wildcard, e.g. `invoice.*`.
                regex = "^" + re.escape(pattern).replace(r"\*", ".*") + "$"
                return re.match(regex, event["type"]) is not None
            return True

        return self._list("event", params, "/v1/events", keep)


ROUTES: list[tuple[str, str, str]] = [
    ("POST", r"/v1/customers", "api_create_customer"),
    ("POST", r"/v1/billing_portal/sessions", "api_create_billing_portal_session"),
    ("GET", r"/v1/customers", "api_list_customers"),
    ("GET", r"/v1/customers/(?P<id>[^/]+)", "api_retrieve_customer"),
    ("POST", r"/v1/products", "api_create_product"),
    ("GET", r"/v1/products/(?P<id>[^/]+)", "api_retrieve_product"),
    ("POST", r"/v1/prices", "api_create_price"),
    ("GET", r"/v1/prices", "api_list_prices"),
    ("GET", r"/v1/prices/(?P<id>[^/]+)", "api_retrieve_price"),
    ("POST", r"/v1/checkout/sessions", "api_create_checkout_session"),
    ("GET", r"/v1/checkout/sessions", "api_list_checkout_sessions"),
    ("GET", r"/v1/checkout/sessions/(?P<id>[^/]+)", "api_retrieve_checkout_session"),
    ("GET", r"/v1/checkout/sessions/(?P<id>[^/]+)/line_items", "api_list_checkout_line_items"),
    ("POST", r"/v1/checkout/sessions/(?P<id>[^/]+)/expire", "api_expire_checkout_session"),
    ("GET", r"/v1/payment_intents/(?P<id>[^/]+)", "api_retrieve_payment_intent"),
    ("GET", r"/v1/charges", "api_list_charges"),
    ("GET", r"/v1/charges/(?P<id>[^/]+)", "api_retrieve_charge"),
    ("POST", r"/v1/refunds", "api_create_refund"),
    ("GET", r"/v1/refunds", "api_list_refunds"),
    ("GET", r"/v1/refunds/(?P<id>[^/]+)", "api_retrieve_refund"),
    ("GET", r"/v1/subscriptions", "api_list_subscriptions"),
    ("GET", r"/v1/subscriptions/(?P<id>[^/]+)", "api_retrieve_subscription"),
    ("POST", r"/v1/subscriptions/(?P<id>[^/]+)", "api_update_subscription"),
    ("DELETE", r"/v1/subscriptions/(?P<id>[^/]+)", "api_cancel_subscription_now"),
    ("GET", r"/v1/invoices", "api_list_invoices"),
    ("GET", r"/v1/invoices/(?P<id>[^/]+)", "api_retrieve_invoice"),
    ("GET", r"/v1/invoice_payments", "api_list_invoice_payments"),
    ("GET", r"/v1/invoice_payments/(?P<id>[^/]+)", "api_retrieve_invoice_payment"),
    ("GET", r"/v1/events", "api_list_events"),
    ("GET", r"/v1/events/(?P<id>[^/]+)", "api_retrieve_event"),
]
