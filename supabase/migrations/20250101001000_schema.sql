-- Generated from sql/10_schema.sql by `creditgate supabase-export`. Edit sql/10_schema.sql and
-- run the command again; never edit this copy.
-- creditgate's tables. They live in the private schema `creditgate`, which PostgREST does
-- not expose; callers reach money only through the RPC entry points in `public`.
-- Amounts are bigint micro-units (1 credit = 1,000,000); Stripe amounts are bigint
-- minor units of their currency; model prices are bigint micro-USD per million tokens.
CREATE SCHEMA IF NOT EXISTS creditgate;

-- `checksum` is the sha256 of the file as applied: `creditgate migrate` refuses a database
-- whose applied files have changed since (a change goes into a new file).
CREATE TABLE creditgate.schema_migrations (
  version    text PRIMARY KEY,
  applied_at timestamptz NOT NULL DEFAULT now(),
  checksum   text
);

-- One row: the knobs of the offer, written by `creditgate catalog apply`.
CREATE TABLE creditgate.settings (
  id                             boolean PRIMARY KEY DEFAULT true CHECK (id),
  credits_per_usd                bigint  NOT NULL DEFAULT 100 CHECK (credits_per_usd > 0),
  markup_bps                     integer NOT NULL DEFAULT 10000 CHECK (markup_bps > 0),
  welcome_credits                bigint  NOT NULL DEFAULT 0 CHECK (welcome_credits >= 0),
  currency                       text    NOT NULL DEFAULT 'usd',
  guest_exchanges_per_session    integer NOT NULL DEFAULT 3 CHECK (guest_exchanges_per_session >= 0),
  guest_exchanges_per_ip_per_day integer NOT NULL DEFAULT 20 CHECK (guest_exchanges_per_ip_per_day >= 0),
  guest_session_ttl_hours        integer NOT NULL DEFAULT 24 CHECK (guest_session_ttl_hours > 0),
  low_balance                    bigint  NOT NULL DEFAULT 0 CHECK (low_balance >= 0),
  reservation_ttl_seconds        integer NOT NULL DEFAULT 300 CHECK (reservation_ttl_seconds > 0),
  abuse_sessions_per_ip          integer NOT NULL DEFAULT 5,
  catalog_hash                   text,
  catalog_applied_at             timestamptz
);
INSERT INTO creditgate.settings DEFAULT VALUES;

CREATE TABLE creditgate.plans (
  id                    text PRIMARY KEY,
  name                  text NOT NULL,
  price_minor           bigint NOT NULL DEFAULT 0 CHECK (price_minor >= 0),
  currency              text NOT NULL DEFAULT 'usd',
  billing_interval      text NOT NULL DEFAULT 'month' CHECK (billing_interval IN ('month', 'year')),
  stripe_price_id       text UNIQUE,
  allowances            jsonb NOT NULL DEFAULT '{}',   -- {"credits": micro, "requests": micro}
  features              text[] NOT NULL DEFAULT '{}',
  agents                text[] NOT NULL DEFAULT '{}',
  rate_limit_per_minute integer NOT NULL DEFAULT 0 CHECK (rate_limit_per_minute >= 0),
  display_order         integer NOT NULL DEFAULT 0,
  active                boolean NOT NULL DEFAULT true
);

CREATE TABLE creditgate.packs (
  id              text PRIMARY KEY,
  name            text NOT NULL,
  price_minor     bigint NOT NULL CHECK (price_minor >= 0),
  currency        text NOT NULL DEFAULT 'usd',
  credits         bigint NOT NULL CHECK (credits > 0),
  bonus_credits   bigint NOT NULL DEFAULT 0 CHECK (bonus_credits >= 0),
  stripe_price_id text UNIQUE,
  display_order   integer NOT NULL DEFAULT 0,
  active          boolean NOT NULL DEFAULT true
);

CREATE TABLE creditgate.features (
  id               text PRIMARY KEY,
  name             text NOT NULL,
  kind             text NOT NULL CHECK (kind IN ('access', 'metered')),
  balance_key      text,
  pricing_mode     text CHECK (pricing_mode IN ('model', 'tokens', 'per_unit')),
  credits_per_unit bigint CHECK (credits_per_unit >= 0),
  requests_key     text,
  active           boolean NOT NULL DEFAULT true,
  CHECK (kind = 'access' OR (balance_key IS NOT NULL AND pricing_mode IS NOT NULL)),
  CHECK (pricing_mode IS DISTINCT FROM 'per_unit' OR credits_per_unit IS NOT NULL)
);

CREATE TABLE creditgate.agents (
  id            text PRIMARY KEY,
  name          text NOT NULL,
  description   text,
  display_order integer NOT NULL DEFAULT 0,
  active        boolean NOT NULL DEFAULT true
);

-- Prices are versioned, never edited: a usage row points at the version it was charged at.
CREATE TABLE creditgate.model_prices (
  id                           bigserial PRIMARY KEY,
  provider                     text NOT NULL,
  model                        text NOT NULL,
  input_per_mtok               bigint NOT NULL CHECK (input_per_mtok >= 0),
  output_per_mtok              bigint NOT NULL CHECK (output_per_mtok >= 0),
  cached_input_per_mtok        bigint CHECK (cached_input_per_mtok >= 0),
  reasoning_per_mtok           bigint CHECK (reasoning_per_mtok >= 0),
  cache_write_per_mtok         bigint CHECK (cache_write_per_mtok >= 0),
  long_context_threshold       bigint CHECK (long_context_threshold > 0),
  long_context_input_per_mtok  bigint CHECK (long_context_input_per_mtok >= 0),
  long_context_output_per_mtok bigint CHECK (long_context_output_per_mtok >= 0),
  long_context_cached_input_per_mtok bigint CHECK (long_context_cached_input_per_mtok >= 0),
  long_context_cache_write_per_mtok  bigint CHECK (long_context_cache_write_per_mtok >= 0),
  source                       text,
  effective_from               timestamptz NOT NULL DEFAULT now(),
  superseded_at                timestamptz
);
CREATE UNIQUE INDEX model_prices_current ON creditgate.model_prices (model, provider)
  WHERE superseded_at IS NULL;

-- The payer. `id` is the caller's id: a Supabase user id or an organisation id.
CREATE TABLE creditgate.accounts (
  id                     text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 128),
  owner_kind             text NOT NULL DEFAULT 'user' CHECK (owner_kind IN ('user', 'org')),
  email                  text,
  plan_id                text NOT NULL REFERENCES creditgate.plans (id),
  -- 'local': periods roll on the signup anchor; 'stripe': Stripe's invoices drive them.
  billing_source         text NOT NULL DEFAULT 'local' CHECK (billing_source IN ('local', 'stripe')),
  period_anchor          timestamptz NOT NULL,
  period_start           timestamptz NOT NULL,
  period_end             timestamptz NOT NULL,
  status                 text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disputed')),
  stripe_customer_id     text UNIQUE,
  stripe_subscription_id text,
  subscription_version   bigint NOT NULL DEFAULT 0,  -- newest Stripe object timestamp applied
  created_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_period_end ON creditgate.accounts (period_end);

CREATE TABLE creditgate.account_members (
  account_id text NOT NULL REFERENCES creditgate.accounts (id) ON DELETE CASCADE,
  user_id    text NOT NULL,
  role       text NOT NULL DEFAULT 'member' CHECK (role IN ('member', 'owner')),
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (account_id, user_id)
);
CREATE INDEX account_members_user ON creditgate.account_members (user_id);

-- Per (account, key): available = H - R where H is what active grants hold and R what is
-- reserved; debt is usage that happened with nothing left to pay for it.
CREATE TABLE creditgate.balances (
  account_id text NOT NULL REFERENCES creditgate.accounts (id),
  key        text NOT NULL,
  available  bigint NOT NULL DEFAULT 0 CHECK (available >= 0),
  reserved   bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0),
  debt       bigint NOT NULL DEFAULT 0 CHECK (debt >= 0),
  PRIMARY KEY (account_id, key),
  CHECK (debt = 0 OR available = 0)
);

CREATE TABLE creditgate.grants (
  id           bigserial PRIMARY KEY,
  account_id   text NOT NULL REFERENCES creditgate.accounts (id),
  key          text NOT NULL,
  source       text NOT NULL CHECK (source IN ('allowance', 'purchase', 'welcome', 'promo', 'adjustment', 'refund')),
  amount       bigint NOT NULL CHECK (amount > 0),
  remaining    bigint NOT NULL CHECK (remaining >= 0 AND remaining <= amount),
  priority     integer NOT NULL,
  expires_at   timestamptz,
  external_ref text NOT NULL,
  plan_id      text,
  period_start timestamptz,
  reason       text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  -- The partial indexes below name `live`, not `remaining`: a burn that changes only
  -- `remaining` then touches no index (a HOT update); `live` flips once, when it runs out.
  live         boolean GENERATED ALWAYS AS (remaining > 0) STORED,
  UNIQUE (account_id, external_ref)
) WITH (fillfactor = 80);
-- The burn order: priority, then soonest expiry, then oldest.
CREATE INDEX grants_burn ON creditgate.grants (account_id, key, priority, expires_at, id) WHERE live;
CREATE INDEX grants_expiring ON creditgate.grants (expires_at) WHERE live;

CREATE TABLE creditgate.reservations (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  account_id      text NOT NULL REFERENCES creditgate.accounts (id),
  key             text NOT NULL,
  amount          bigint NOT NULL CHECK (amount >= 0),
  feature_id      text NOT NULL,
  model           text,
  status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'settled', 'released', 'expired')),
  expires_at      timestamptz NOT NULL,
  usage_id        uuid,
  created_at      timestamptz NOT NULL DEFAULT now(),
  closed_at       timestamptz
);
CREATE INDEX reservations_active ON creditgate.reservations (expires_at) WHERE status = 'active';
CREATE INDEX reservations_account ON creditgate.reservations (account_id) WHERE status = 'active';

-- Every call that consumed something. It keeps the prices it was charged at, so history
-- never re-prices.
CREATE TABLE creditgate.usage_events (
  id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  account_id          text NOT NULL,
  user_id             text,
  session_id          text,
  feature_id          text NOT NULL,
  agent_id            text,
  provider            text,
  model               text,
  price_id            bigint,
  prices              jsonb,
  input_tokens        bigint NOT NULL DEFAULT 0,
  output_tokens       bigint NOT NULL DEFAULT 0,
  cached_input_tokens bigint NOT NULL DEFAULT 0,
  reasoning_tokens    bigint NOT NULL DEFAULT 0,
  cache_write_tokens  bigint NOT NULL DEFAULT 0,
  quantity            bigint NOT NULL DEFAULT 0,
  key                 text NOT NULL,
  cost                bigint NOT NULL CHECK (cost >= 0),
  cost_pico_usd       bigint NOT NULL DEFAULT 0,
  debt_added          bigint NOT NULL DEFAULT 0,
  reservation_id      uuid,
  metadata            jsonb,
  created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_events_account ON creditgate.usage_events (account_id, created_at DESC);
CREATE INDEX usage_events_created ON creditgate.usage_events (created_at);

-- The journal: append-only, one signed line per movement of H - D, with the value after.
CREATE TABLE creditgate.ledger_entries (
  id            bigserial PRIMARY KEY,
  account_id    text NOT NULL,
  key           text NOT NULL,
  kind          text NOT NULL CHECK (kind IN ('grant', 'consume', 'expire', 'clawback', 'adjustment')),
  amount        bigint NOT NULL,
  balance_after bigint NOT NULL,
  grant_id      bigint,
  usage_id      uuid,
  source        text,
  external_ref  text,
  created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_entries_account ON creditgate.ledger_entries (account_id, key, id DESC);
CREATE INDEX ledger_entries_account_all ON creditgate.ledger_entries (account_id, id DESC);

CREATE FUNCTION creditgate.forbid_journal_rewrite() RETURNS trigger
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  RAISE EXCEPTION 'ledger_entries is append-only' USING ERRCODE = '42501';
END
$$;
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
  ON creditgate.ledger_entries FOR EACH STATEMENT EXECUTE FUNCTION creditgate.forbid_journal_rewrite();

-- A mutating call's key, the hash of its body and the answer it got, per account and scope.
CREATE TABLE creditgate.idempotency_keys (
  account_id   text NOT NULL,
  scope        text NOT NULL,
  key          text NOT NULL,
  request_hash text NOT NULL,
  response     jsonb,
  created_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (account_id, scope, key)
);

CREATE TABLE creditgate.guest_sessions (
  session_id text PRIMARY KEY,
  ip         inet,
  exchanges  integer NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL
);
CREATE INDEX guest_sessions_expires ON creditgate.guest_sessions (expires_at);

CREATE TABLE creditgate.guest_ip_days (
  ip        inet NOT NULL,
  day       date NOT NULL,
  exchanges integer NOT NULL DEFAULT 0,
  sessions  integer NOT NULL DEFAULT 0,
  PRIMARY KEY (ip, day)
);

CREATE TABLE creditgate.rate_windows (
  account_id   text NOT NULL,
  window_start timestamptz NOT NULL,
  requests     integer NOT NULL DEFAULT 0,
  PRIMARY KEY (account_id, window_start)
);

CREATE TABLE creditgate.orders (
  id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  account_id            text NOT NULL REFERENCES creditgate.accounts (id),
  kind                  text NOT NULL CHECK (kind IN ('pack', 'plan')),
  item_id               text NOT NULL,
  status                text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'paid', 'expired', 'failed', 'refunded', 'partially_refunded', 'disputed')),
  amount_minor          bigint NOT NULL CHECK (amount_minor >= 0),
  currency              text NOT NULL,
  credits               bigint NOT NULL DEFAULT 0,
  refunded_minor        bigint NOT NULL DEFAULT 0,
  clawed_back           bigint NOT NULL DEFAULT 0,
  idempotency_key       text,
  stripe_session_id     text UNIQUE,
  stripe_payment_intent text,
  stripe_charge_id      text,
  checkout_url          text,
  created_at            timestamptz NOT NULL DEFAULT now(),
  updated_at            timestamptz NOT NULL DEFAULT now(),
  UNIQUE (account_id, idempotency_key)
);
CREATE INDEX orders_account ON creditgate.orders (account_id, created_at DESC);

-- Threshold notices (75/90/100 % of an allowance, low balance), one per kind and period.
CREATE TABLE creditgate.notices (
  id           bigserial PRIMARY KEY,
  account_id   text NOT NULL,
  key          text NOT NULL,
  kind         text NOT NULL,
  period_start timestamptz NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (account_id, key, kind, period_start)
);

INSERT INTO creditgate.schema_migrations (version) VALUES ('10_schema') ON CONFLICT DO NOTHING;
