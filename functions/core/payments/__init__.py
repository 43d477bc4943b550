"""Money in: Stripe Checkout for packs and plans, the webhook that applies Stripe's events
exactly once, and an offline payment mode that imitates both without Stripe."""
