"""Customer, catalog and Checkout endpoints of the fake: validation and Stripe's answers.

Parameters Stripe accepts but the fake does not model (tax, promotion codes, locales,
...) are accepted and have no effect; ones it would get wrong silently (trials, one-time
items in subscription mode) are refused with a `FakeStripe ...` message instead.
"""

from __future__ import annotations

import re
from typing import Any

from . import stripe_objects as objects
from .stripe_params import (
    CUSTOMER_CREATE,
    EMBEDDED_UI,
    EXPAND,
    HOSTED_UI,
    PAGING,
    PAYMENT_INTENT_DATA,
    PRICE_CREATE,
    PRICE_RECURRING,
    PRODUCT_CREATE,
    PRODUCT_DATA,
    SESSION_CREATE,
    SESSION_LINE_ITEM,
    SESSION_PRICE_DATA,
    SUBSCRIPTION_DATA,
    UI_MODES,
)
from .stripe_store import StripeStore
from .stripe_wire import (
    apply_metadata,
    as_bool,
    as_dict,
    as_enum,
    as_int,
    as_list,
    as_str,
    check_known,
    invalid,
    missing_param,
)

_URL = re.compile(r"^https?://[^\s/]+")


def _url(params: dict[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not _URL.match(value):
        raise invalid("Not a valid URL", param=name, code="url_invalid")
    return value


class CheckoutEndpoints(StripeStore):
    # ----------------------------------------------------------------- customers

    def api_create_customer(self, params: dict[str, Any]) -> dict[str, Any]:
        check_known(params, CUSTOMER_CREATE)
        email = params.get("email")
        if email is not None:
            as_str(email, "email", max_length=512)
            if email and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
                raise invalid(f"Invalid email address: {email}", param="email", code="email_invalid")
        metadata = apply_metadata({}, params.get("metadata", {}))
        self._tick()
        customer = self._new_customer(
            email=email or None,
            name=params.get("name"),
            description=params.get("description"),
            phone=params.get("phone"),
            metadata=metadata,
        )
        return self._render(customer, params)

    def api_retrieve_customer(self, params: dict[str, Any], id: str) -> dict[str, Any]:
        check_known(params, EXPAND)
        return self._render(self._find("customer", id), params)

    def api_list_customers(self, params: dict[str, Any]) -> dict[str, Any]:
        check_known(params, PAGING | {"email", "test_clock"})
        email = params.get("email")
        return self._list(
            "customer",
            params,
            "/v1/customers",
            keep=(lambda c: c["email"] == email) if email is not None else None,
        )

    # ----------------------------------------------------------------- products & prices

    def api_create_product(self, params: dict[str, Any]) -> dict[str, Any]:
        check_known(params, PRODUCT_CREATE)
        product = self._product_from(params, "")
        now = self._tick()
        product.update(created=now, updated=now)
        self._put(product)
        self._emit("product.created", product)
        return self._render(product, params)

    def _product_from(self, data: dict[str, Any], prefix: str) -> dict[str, Any]:
        """Validate product params; the caller stores the product."""

        def name_of(field: str) -> str:
            return f"{prefix}[{field}]" if prefix else field

        if not data.get("name"):
            raise missing_param(name_of("name"))
        active = as_bool(data["active"], name_of("active")) if "active" in data else True
        product_id = data.get("id") or self.ids.new("prod")
        if product_id in self._objects:
            raise invalid("Product already exists.", param=name_of("id"), code="resource_already_exists")
        return objects.product(
            product_id,
            self._clock,
            name=as_str(data["name"], name_of("name")),
            description=data.get("description"),
            metadata=apply_metadata({}, data.get("metadata", {}), name_of("metadata")),
            active=active,
        )

    def api_retrieve_product(self, params: dict[str, Any], id: str) -> dict[str, Any]:
        check_known(params, EXPAND)
        return self._render(self._find("product", id), params)

    def api_create_price(self, params: dict[str, Any]) -> dict[str, Any]:
        check_known(params, PRICE_CREATE)
        price = self._store_price(*self._price_from(params, "", active_default=True))
        return self._render(price, params)

    def _price_from(
        self, data: dict[str, Any], prefix: str, *, active_default: bool
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Validate `POST /v1/prices` params or a line item's `price_data`.

        Returns the price and, for `product_data`, its new product, both not yet stored:
        a request that fails validation later must leave nothing behind.
        """

        def name_of(field: str) -> str:
            return f"{prefix}[{field}]" if prefix else field

        if "currency" not in data:
            raise missing_param(name_of("currency"))
        currency = as_str(data["currency"], name_of("currency")).lower()
        if not re.fullmatch(r"[a-z]{3}", currency):
            raise invalid(f"Invalid currency: {currency}", param=name_of("currency"))
        if "product" in data and "product_data" in data:
            raise invalid(
                f"You may only specify one of these parameters: {name_of('product')}, {name_of('product_data')}.",
                param=name_of("product_data"),
            )
        if "unit_amount" in data:
            unit_amount = as_int(data["unit_amount"], name_of("unit_amount"), minimum=0)
        elif "unit_amount_decimal" in data:
            decimal = as_str(data["unit_amount_decimal"], name_of("unit_amount_decimal"))
            if not re.fullmatch(r"\d+", decimal):
                raise invalid(
                    "FakeStripe only models whole minor-unit amounts",
                    param=name_of("unit_amount_decimal"),
                )
            unit_amount = int(decimal)
        else:
            raise missing_param(name_of("unit_amount"))
        rec = None
        if data.get("recurring") not in (None, ""):
            raw = as_dict(data["recurring"], name_of("recurring"))
            check_known(raw, PRICE_RECURRING, name_of("recurring"))
            if "interval" not in raw:
                raise missing_param(f"{name_of('recurring')}[interval]")
            interval = as_enum(
                raw["interval"],
                f"{name_of('recurring')}[interval]",
                ("day", "month", "week", "year"),
            )
            count = as_int(raw.get("interval_count", 1), f"{name_of('recurring')}[interval_count]", minimum=1)
            rec = objects.recurring(interval, count)
        new_product = None
        if "product" in data:
            product_id = self._find("product", data["product"], name_of("product"))["id"]
        elif "product_data" in data:
            raw_product = as_dict(data["product_data"], name_of("product_data"))
            check_known(raw_product, PRODUCT_DATA, name_of("product_data"))
            new_product = self._product_from(raw_product, name_of("product_data"))
            product_id = new_product["id"]
        else:
            raise invalid(
                "You must specify either `product` or `product_data` when creating a price.",
                param=name_of("product"),
            )
        lookup_key = data.get("lookup_key")
        if lookup_key is not None:
            holder = next((p for p in self._all("price") if p["lookup_key"] == lookup_key), None)
            if holder is not None and data.get("transfer_lookup_key") != "true":
                raise invalid(
                    f"A price (`{holder['id']}`) already uses that lookup key.",
                    param="lookup_key",
                )
        active = as_bool(data["active"], name_of("active")) if "active" in data else active_default
        tax_behavior = data.get("tax_behavior", "unspecified")
        as_enum(tax_behavior, name_of("tax_behavior"), ("exclusive", "inclusive", "unspecified"))
        price = objects.price(
            data.get("id") or self.ids.new("price"),
            self._clock,
            product=product_id,
            currency=currency,
            unit_amount=unit_amount,
            recurring=rec,
            metadata=apply_metadata({}, data.get("metadata", {}), name_of("metadata")),
            nickname=data.get("nickname"),
            lookup_key=lookup_key,
            active=active,
            tax_behavior=tax_behavior,
        )
        return price, new_product

    def _store_price(self, price: dict[str, Any], new_product: dict[str, Any] | None) -> dict[str, Any]:
        now = self._tick()
        if new_product is not None:
            new_product.update(created=now, updated=now)
            self._put(new_product)
            self._emit("product.created", new_product)
        if price["lookup_key"] is not None:
            # `transfer_lookup_key=true` was checked in _price_from; move the key now.
            for other in self._all("price"):
                if other["lookup_key"] == price["lookup_key"]:
                    other["lookup_key"] = None
        price["created"] = now
        self._put(price)
        self._emit("price.created", price)
        return price

    def api_retrieve_price(self, params: dict[str, Any], id: str) -> dict[str, Any]:
        check_known(params, EXPAND)
        return self._render(self._find("price", id), params)

    def api_list_prices(self, params: dict[str, Any]) -> dict[str, Any]:
        check_known(params, PAGING | {"active", "currency", "lookup_keys", "product", "recurring", "type"})
        lookup_keys = as_list(params["lookup_keys"], "lookup_keys") if "lookup_keys" in params else None
        active = as_bool(params["active"], "active") if "active" in params else None

        def keep(p: dict[str, Any]) -> bool:
            return (
                (lookup_keys is None or p["lookup_key"] in lookup_keys)
                and (active is None or p["active"] == active)
                and params.get("currency", p["currency"]) == p["currency"]
                and params.get("product", p["product"]) == p["product"]
                and params.get("type", p["type"]) == p["type"]
            )

        return self._list("price", params, "/v1/prices", keep)

    # ----------------------------------------------------------------- checkout

    def api_create_checkout_session(self, params: dict[str, Any]) -> dict[str, Any]:
        check_known(params, SESSION_CREATE)
        if "mode" not in params:
            raise missing_param("mode")
        mode = as_enum(params["mode"], "mode", ("payment", "setup", "subscription"))
        ui_mode = as_enum(params.get("ui_mode", "hosted_page"), "ui_mode", UI_MODES)
        success_url, cancel_url = _url(params, "success_url"), _url(params, "cancel_url")
        return_url = _url(params, "return_url")
        if ui_mode in HOSTED_UI:
            if return_url is not None:
                raise invalid(f"`return_url` cannot be used with `ui_mode={ui_mode}`.", param="return_url")
            if success_url is None:
                raise missing_param("success_url")
        else:
            for name, value in (("success_url", success_url), ("cancel_url", cancel_url)):
                if value is not None:
                    raise invalid(f"`{name}` cannot be used with `ui_mode={ui_mode}`.", param=name)
            redirect = params.get("redirect_on_completion", "always")
            if ui_mode in EMBEDDED_UI and redirect != "never" and return_url is None:
                raise missing_param("return_url")

        customer_id = params.get("customer")
        if customer_id is not None:
            self._find("customer", customer_id, "customer")
            if "customer_email" in params:
                raise invalid(
                    "You may only specify one of these parameters: customer, customer_email.",
                    param="customer_email",
                )
        customer_creation = params.get("customer_creation")
        if customer_creation is not None:
            as_enum(customer_creation, "customer_creation", ("always", "if_required"))
            if mode != "payment":
                raise invalid(
                    "`customer_creation` can only be used in `payment` mode.",
                    param="customer_creation",
                )
        client_reference_id = params.get("client_reference_id")
        if client_reference_id is not None:
            as_str(client_reference_id, "client_reference_id", max_length=200)
        metadata = apply_metadata({}, params.get("metadata", {}))

        pi_data = as_dict(params.get("payment_intent_data", {}), "payment_intent_data")
        check_known(pi_data, PAYMENT_INTENT_DATA, "payment_intent_data")
        if pi_data and mode != "payment":
            raise invalid(
                f"You can not pass `payment_intent_data` in `{mode}` mode.",
                param="payment_intent_data",
            )
        sub_data = as_dict(params.get("subscription_data", {}), "subscription_data")
        check_known(sub_data, SUBSCRIPTION_DATA, "subscription_data")
        if sub_data and mode != "subscription":
            raise invalid(
                f"You can not pass `subscription_data` in `{mode}` mode.",
                param="subscription_data",
            )
        for unmodelled in ("trial_period_days", "trial_end", "billing_cycle_anchor"):
            if unmodelled in sub_data:
                raise invalid(
                    f"FakeStripe does not model subscription_data[{unmodelled}]",
                    param=f"subscription_data[{unmodelled}]",
                )

        # Kept for completion; Stripe does not show these on the session.
        private = {
            "payment_intent_metadata": apply_metadata({}, pi_data.get("metadata", {}), "payment_intent_data[metadata]"),
            "payment_intent_description": pi_data.get("description"),
            "subscription_metadata": apply_metadata({}, sub_data.get("metadata", {}), "subscription_data[metadata]"),
            "subscription_description": sub_data.get("description"),
        }
        payment_method_types = as_list(params.get("payment_method_types", ["card"]), "payment_method_types")
        for index, method in enumerate(payment_method_types):
            as_str(method, f"payment_method_types[{index}]")

        pending_prices: list[tuple[dict[str, Any], Any]] = []
        lines = self._session_line_inputs(params, mode, pending_prices)
        currencies = {p["currency"] for p, _ in lines}
        if len(currencies) > 1:
            raise invalid("All line items must use the same currency.", param="line_items")
        if mode == "subscription":
            if not any(p["recurring"] for p, _ in lines):
                raise invalid(
                    "You must provide at least one recurring price in `subscription` mode when using prices.",
                    param="line_items",
                )
            if not all(p["recurring"] for p, _ in lines):
                raise invalid(
                    "FakeStripe does not model one-time prices in `subscription` mode.",
                    param="line_items",
                )
            cycles = {(p["recurring"]["interval"], p["recurring"]["interval_count"]) for p, _ in lines}
            if len(cycles) > 1:
                raise invalid(
                    "Checkout does not support multiple prices with different billing intervals.",
                    param="line_items",
                )
        if mode == "payment" and any(p["recurring"] for p, _ in lines):
            raise invalid(
                "You specified `payment` mode but passed a recurring price. Either switch to "
                "`subscription` mode or use only one-time prices.",
                param="line_items",
            )
        currency = (
            currencies.pop()
            if currencies
            else (params["currency"].lower() if isinstance(params.get("currency"), str) else None)
        )

        now = self._clock + self.tick
        expires_at = None
        if "expires_at" in params:
            expires_at = as_int(params["expires_at"], "expires_at")
            if expires_at < now + 30 * 60:
                raise invalid(
                    "The `expires_at` timestamp must be at least 30 minutes from Checkout Session creation.",
                    param="expires_at",
                )
            if expires_at > now + 24 * 3600:
                raise invalid(
                    "The `expires_at` timestamp must be less than 24 hours from Checkout Session creation.",
                    param="expires_at",
                )
        for price, new_product in pending_prices:
            self._store_price(price, new_product)
        now = self._tick()
        if expires_at is None:
            expires_at = now + 24 * 3600
        session_id = self.ids.new("cs_test")
        hosted = ui_mode in HOSTED_UI
        amount_total = sum(p["unit_amount"] * q for p, q in lines) if lines else None
        session = objects.checkout_session(
            session_id,
            now,
            url=f"{self.base_url}/c/pay/{session_id}" if hosted else None,
            mode=mode,
            ui_mode=ui_mode,
            currency=currency,
            amount_total=amount_total,
            customer=customer_id,
            customer_email=params.get("customer_email"),
            customer_creation=(
                (customer_creation or "if_required")
                if mode == "payment"
                else ("always" if mode == "subscription" else None)
            ),
            client_reference_id=client_reference_id,
            metadata=metadata,
            success_url=success_url,
            cancel_url=cancel_url,
            return_url=return_url,
            expires_at=expires_at,
            client_secret=None if hosted else self.ids.secret(f"{session_id}_secret_"),
            locale=params.get("locale"),
            payment_method_types=payment_method_types,
        )
        self._put(session)
        self._session_lines[session_id] = [
            objects.checkout_line_item(self.ids.new("li"), p, q, self._product_name(p["product"])) for p, q in lines
        ]
        self._session_private[session_id] = private
        return self._render(session, params)

    def _session_line_inputs(
        self, params: dict[str, Any], mode: str, pending: list[tuple[dict[str, Any], Any]]
    ) -> list[tuple[dict[str, Any], int]]:
        """(price, quantity) per line item; inline prices to create go to `pending`."""
        if "line_items" not in params:
            if mode == "setup":
                return []
            raise missing_param("line_items")
        if mode == "setup":
            raise invalid("You cannot pass `line_items` in `setup` mode.", param="line_items")
        raw_items = as_list(params["line_items"], "line_items")
        if not raw_items:
            raise missing_param("line_items")
        result = []
        for index, raw in enumerate(raw_items):
            prefix = f"line_items[{index}]"
            item = as_dict(raw, prefix)
            check_known(item, SESSION_LINE_ITEM, prefix)
            if "price" in item and "price_data" in item:
                raise invalid(
                    f"You may only specify one of these parameters: {prefix}[price], {prefix}[price_data].",
                    param=f"{prefix}[price_data]",
                )
            if "price" in item:
                price = self._find("price", item["price"], f"{prefix}[price]")
                if not price["active"]:
                    raise invalid(
                        "The price specified is inactive. This field only accepts active prices.",
                        param=f"{prefix}[price]",
                    )
            elif "price_data" in item:
                data = as_dict(item["price_data"], f"{prefix}[price_data]")
                check_known(data, SESSION_PRICE_DATA, f"{prefix}[price_data]")
                # Inline prices are created inactive so they cannot be reused; they are
                # stored once the whole request has passed validation.
                price, new_product = self._price_from(data, f"{prefix}[price_data]", active_default=False)
                pending.append((price, new_product))
            else:
                raise missing_param(f"{prefix}[price]")
            if "quantity" not in item:
                raise missing_param(f"{prefix}[quantity]")
            quantity = as_int(item["quantity"], f"{prefix}[quantity]", minimum=1)
            result.append((price, quantity))
        return result

    def api_retrieve_checkout_session(self, params: dict[str, Any], id: str) -> dict[str, Any]:
        check_known(params, EXPAND)
        return self._render(self._find("checkout.session", id), params)

    def api_list_checkout_sessions(self, params: dict[str, Any]) -> dict[str, Any]:
        filters = ("customer", "payment_intent", "subscription", "status", "payment_link")
        check_known(params, PAGING | set(filters) | {"customer_details", "customer_account"})

        def keep(s: dict[str, Any]) -> bool:
            return all(params.get(f, s.get(f)) == s.get(f) for f in filters)

        return self._list("checkout.session", params, "/v1/checkout/sessions", keep)

    def api_list_checkout_line_items(self, params: dict[str, Any], id: str) -> dict[str, Any]:
        check_known(params, PAGING)
        self._find("checkout.session", id)
        return self._list(
            "item",
            params,
            f"/v1/checkout/sessions/{id}/line_items",
            items=self._session_lines.get(id, []),
        )

    def api_expire_checkout_session(self, params: dict[str, Any], id: str) -> dict[str, Any]:
        check_known(params, EXPAND)
        session = self._find("checkout.session", id)
        if session["status"] == "open":
            self._tick()
        self._expire_session(session)
        return self._render(session, params)
