"""Parameter names each fake Stripe endpoint accepts.

Copied from the `*Params` TypedDicts of stripe-python 16 (API version `*.endive`), so
that a misspelt or invented parameter fails as it does against Stripe
(`parameter_unknown`). Nested lists cover the hashes the fake reads into.
"""

EXPAND = frozenset({"expand"})
PAGING = frozenset({"limit", "starting_after", "ending_before", "expand", "created"})

CUSTOMER_CREATE = frozenset(
    "address balance business_name cash_balance description email expand individual_name "
    "invoice_prefix invoice_settings metadata name next_invoice_sequence payment_method phone "
    "preferred_locales shipping source tax tax_exempt tax_id_data test_clock validate".split()
)
PRODUCT_CREATE = frozenset(
    "active default_price_data description expand id images marketing_features metadata name "
    "package_dimensions shippable statement_descriptor tax_code tax_details type unit_label "
    "url".split()
)
PRICE_CREATE = frozenset(
    "active billing_scheme currency currency_options custom_unit_amount expand lookup_key "
    "metadata nickname product product_data recurring tax_behavior tiers tiers_mode "
    "transfer_lookup_key transform_quantity unit_amount unit_amount_decimal".split()
)
PRICE_RECURRING = frozenset("interval interval_count meter trial_period_days usage_type".split())
PRODUCT_DATA = frozenset(
    "active description id images metadata name statement_descriptor tax_code tax_details unit_label".split()
)
SESSION_CREATE = frozenset(
    "adaptive_pricing after_expiration allow_promotion_codes allowed_payment_method_types "
    "automatic_tax billing_address_collection branding_settings cancel_url client_reference_id "
    "consent_collection currency custom_fields custom_text customer customer_account "
    "customer_creation customer_email customer_update discounts excluded_payment_method_types "
    "expand expires_at integration_identifier invoice_creation line_items locale "
    "managed_payments metadata mode name_collection optional_items origin_context "
    "payment_intent_data payment_method_collection payment_method_configuration "
    "payment_method_data payment_method_options payment_method_types permissions "
    "phone_number_collection redirect_on_completion return_url saved_payment_method_options "
    "setup_intent_data shipping_address_collection shipping_options submit_type "
    "subscription_data success_url tax_id_collection ui_mode wallet_options".split()
)
SESSION_LINE_ITEM = frozenset("adjustable_quantity metadata price price_data quantity tax_rates".split())
SESSION_PRICE_DATA = frozenset(
    "currency product product_data recurring tax_behavior unit_amount unit_amount_decimal".split()
)
PAYMENT_INTENT_DATA = frozenset(
    "application_fee_amount capture_method description metadata on_behalf_of receipt_email "
    "setup_future_usage shipping statement_descriptor statement_descriptor_suffix "
    "transfer_data transfer_group".split()
)
SUBSCRIPTION_DATA = frozenset(
    "application_fee_percent billing_cycle_anchor billing_cycle_anchor_config billing_mode "
    "default_tax_rates description invoice_settings metadata on_behalf_of "
    "pending_invoice_item_interval proration_behavior transfer_data trial_end "
    "trial_period_days trial_settings".split()
)
SUBSCRIPTION_UPDATE = frozenset(
    "add_invoice_items application_fee_percent automatic_tax billing_cycle_anchor "
    "billing_schedules billing_thresholds cancel_at cancel_at_period_end cancellation_details "
    "collection_method days_until_due default_payment_method default_source default_tax_rates "
    "description discounts expand invoice_settings items metadata off_session on_behalf_of "
    "pause_collection payment_behavior payment_settings pending_invoice_item_interval "
    "proration_behavior proration_date transfer_data trial_end trial_from_plan "
    "trial_settings".split()
)
SUBSCRIPTION_ITEM_UPDATE = frozenset(
    "billing_thresholds clear_usage current_trial deleted discounts id metadata plan price "
    "price_data quantity tax_rates".split()
)
SUBSCRIPTION_CANCEL = frozenset("cancellation_details expand invoice_now prorate".split())
REFUND_CREATE = frozenset(
    "amount charge currency customer expand instructions_email metadata origin payment_intent "
    "reason refund_application_fee reverse_transfer".split()
)

HOSTED_UI = ("hosted", "hosted_page")
EMBEDDED_UI = ("embedded", "embedded_page")
UI_MODES = ("custom", "elements", "embedded", "embedded_page", "form", "hosted", "hosted_page")
PORTAL_SESSION_CREATE = frozenset(
    "configuration customer customer_account expand flow_data locale on_behalf_of return_url".split()
)
