-- Granary's schema. The queue's own tables (`apalis.jobs`, `apalis.workers`) come from
-- apalis-postgres's migrations, which `granary-worker migrate` runs first; everything here
-- lives in the `public` schema.
--
-- The constraints below are what make the promises in ARCHITECTURE.md true: a paid order is
-- fulfilled once because grants and entitlements are unique by their source, a webhook is
-- applied once because events are unique by provider + id, an email is sent once because it
-- is unique by its dedupe key. Application code relies on these, not on "check then insert".

CREATE EXTENSION IF NOT EXISTS pgcrypto; -- gen_random_uuid() on PostgreSQL < 13, digest()

-- Keeps updated_at honest without every UPDATE having to remember it.
CREATE OR REPLACE FUNCTION granary_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

-- One row per Clerk user. Created on first sight (a verified JWT or a `user.*` webhook,
-- whichever comes first) and kept in sync by `user.updated`.
CREATE TABLE profiles (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    clerk_user_id   text NOT NULL,
    email           text,
    first_name      text,
    last_name       text,
    -- buyer < seller < admin. Synced from Clerk `public_metadata.role` or set by the operator.
    role            text NOT NULL DEFAULT 'buyer',
    -- The time of the newest Clerk `user.*` event applied, so an older delivery that arrives
    -- late cannot overwrite newer data.
    last_event_at   timestamptz,
    deleted_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT profiles_clerk_user_id_key UNIQUE (clerk_user_id),
    CONSTRAINT profiles_role_check CHECK (role IN ('buyer', 'seller', 'admin'))
);
CREATE TRIGGER profiles_touch BEFORE UPDATE ON profiles
    FOR EACH ROW EXECUTE FUNCTION granary_touch_updated_at();

-- Billing details of a buyer; one per profile.
CREATE TABLE customer_accounts (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    profile_id      uuid NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    billing_email   text,
    full_name       text,
    company_name    text,
    phone           text,
    country         text,
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT customer_accounts_profile_id_key UNIQUE (profile_id),
    CONSTRAINT customer_accounts_country_check CHECK (country IS NULL OR country ~ '^[A-Z]{2}$')
);
CREATE TRIGGER customer_accounts_touch BEFORE UPDATE ON customer_accounts
    FOR EACH ROW EXECUTE FUNCTION granary_touch_updated_at();

CREATE TABLE products (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    seller_profile_id     uuid NOT NULL REFERENCES profiles (id),
    name                  text NOT NULL,
    slug                  text NOT NULL,
    description           text NOT NULL DEFAULT '',
    product_type          text NOT NULL DEFAULT 'digital',
    visibility            text NOT NULL DEFAULT 'draft',
    -- Features granted to a buyer of this product (entitlement keys).
    feature_keys          text[] NOT NULL DEFAULT '{}',
    -- Download grant policy; NULL means "use the configured default".
    download_expiry_days  integer,
    download_max          integer,
    metadata              jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- Soft delete: orders keep referring to a deleted product.
    deleted_at            timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    -- The API maps this constraint name to 409 `conflict`.
    CONSTRAINT products_slug_key UNIQUE (slug),
    CONSTRAINT products_slug_format CHECK (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$' AND length(slug) <= 100),
    CONSTRAINT products_name_check CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    CONSTRAINT products_type_check CHECK (product_type IN ('digital', 'service', 'subscription')),
    CONSTRAINT products_visibility_check CHECK (visibility IN ('draft', 'published', 'archived')),
    CONSTRAINT products_download_expiry_check CHECK (download_expiry_days IS NULL OR download_expiry_days > 0),
    CONSTRAINT products_download_max_check CHECK (download_max IS NULL OR download_max > 0)
);
CREATE INDEX products_seller_idx ON products (seller_profile_id) WHERE deleted_at IS NULL;
CREATE TRIGGER products_touch BEFORE UPDATE ON products
    FOR EACH ROW EXECUTE FUNCTION granary_touch_updated_at();

CREATE TABLE prices (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    product_id      uuid NOT NULL REFERENCES products (id),
    name            text NOT NULL DEFAULT '',
    -- Money is integer minor units plus an ISO 4217 currency; never floats.
    amount_cents    bigint NOT NULL,
    currency        text NOT NULL,
    billing_period  text NOT NULL DEFAULT 'one_time',
    is_default      boolean NOT NULL DEFAULT false,
    is_active       boolean NOT NULL DEFAULT true,
    clerk_plan_id   text,
    clerk_price_id  text,
    -- `checkout_url` lives here, as in the starter.
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
    deleted_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT prices_amount_check CHECK (amount_cents >= 0),
    CONSTRAINT prices_currency_check CHECK (currency ~ '^[A-Z]{3}$'),
    CONSTRAINT prices_billing_period_check
        CHECK (billing_period IN ('one_time', 'weekly', 'monthly', 'quarterly', 'yearly')),
    CONSTRAINT prices_metadata_check CHECK (jsonb_typeof(metadata) = 'object')
);
-- At most one default price per product (the API maps it to 409).
CREATE UNIQUE INDEX prices_one_default_per_product ON prices (product_id)
    WHERE is_default AND deleted_at IS NULL;
CREATE INDEX prices_product_idx ON prices (product_id) WHERE deleted_at IS NULL;
-- Clerk Billing events name a plan; subscriptions and payment attempts are matched through it.
CREATE INDEX prices_clerk_plan_idx ON prices (clerk_plan_id) WHERE clerk_plan_id IS NOT NULL;
CREATE TRIGGER prices_touch BEFORE UPDATE ON prices
    FOR EACH ROW EXECUTE FUNCTION granary_touch_updated_at();

CREATE TABLE orders (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- What clients and providers see: unguessable, unlike a sequence.
    public_id            text NOT NULL,
    customer_profile_id  uuid NOT NULL REFERENCES profiles (id),
    status               text NOT NULL DEFAULT 'pending',
    currency             text NOT NULL,
    subtotal_cents       bigint NOT NULL,
    total_cents          bigint NOT NULL,
    -- A retried create with the same Idempotency-Key returns the first order.
    idempotency_key      text,
    checkout_url         text,
    paid_at              timestamptz,
    fulfilled_at         timestamptz,
    canceled_at          timestamptz,
    refunded_at          timestamptz,
    metadata             jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT orders_public_id_key UNIQUE (public_id),
    CONSTRAINT orders_idempotency_key UNIQUE (customer_profile_id, idempotency_key),
    CONSTRAINT orders_status_check
        CHECK (status IN ('pending', 'paid', 'fulfilled', 'canceled', 'refunded', 'disputed', 'failed')),
    CONSTRAINT orders_currency_check CHECK (currency ~ '^[A-Z]{3}$'),
    CONSTRAINT orders_amounts_check CHECK (subtotal_cents >= 0 AND total_cents >= 0),
    -- A paid (or later) order always says when it was paid.
    CONSTRAINT orders_paid_at_check
        CHECK (status IN ('pending', 'canceled', 'failed') OR paid_at IS NOT NULL)
);
CREATE INDEX orders_customer_idx ON orders (customer_profile_id, created_at DESC);
-- "Paid but not fulfilled after N minutes" is the question the operator asks at night.
CREATE INDEX orders_paid_unfulfilled_idx ON orders (paid_at) WHERE status = 'paid';
CREATE TRIGGER orders_touch BEFORE UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION granary_touch_updated_at();

CREATE TABLE order_items (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id           uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    product_id         uuid NOT NULL REFERENCES products (id),
    price_id           uuid NOT NULL REFERENCES prices (id),
    -- Snapshots: what the buyer saw, whatever the seller edits later.
    product_name       text NOT NULL,
    quantity           integer NOT NULL DEFAULT 1,
    unit_amount_cents  bigint NOT NULL,
    total_cents        bigint NOT NULL,
    currency           text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT order_items_quantity_check CHECK (quantity BETWEEN 1 AND 1000),
    CONSTRAINT order_items_amounts_check
        CHECK (unit_amount_cents >= 0 AND total_cents = unit_amount_cents * quantity),
    CONSTRAINT order_items_currency_check CHECK (currency ~ '^[A-Z]{3}$')
);
CREATE INDEX order_items_order_idx ON order_items (order_id);
CREATE INDEX order_items_product_idx ON order_items (product_id);

CREATE TABLE subscriptions (
    id                         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider                   text NOT NULL DEFAULT 'clerk',
    -- Clerk's subscription or subscription item id: the upsert key.
    provider_subscription_id   text NOT NULL,
    -- 'subscription' for a Clerk subscription, 'item' for one of its items (a plan).
    kind                       text NOT NULL DEFAULT 'item',
    parent_provider_id         text,
    -- The payer. Clerk may send a billing event before `user.created`, so the Clerk user id
    -- is kept even when the profile is created later.
    clerk_user_id              text NOT NULL,
    profile_id                 uuid REFERENCES profiles (id),
    plan_id                    text,
    plan_slug                  text,
    price_id                   uuid REFERENCES prices (id),
    status                     text NOT NULL,
    -- The features the plan grants, as last reported (or from the matching local price).
    feature_keys               text[] NOT NULL DEFAULT '{}',
    current_period_start       timestamptz,
    current_period_end         timestamptz,
    canceled_at                timestamptz,
    ended_at                   timestamptz,
    -- Newest provider event applied; an older one arriving late is ignored.
    last_event_at              timestamptz NOT NULL,
    raw                        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT subscriptions_provider_key UNIQUE (provider, provider_subscription_id),
    CONSTRAINT subscriptions_kind_check CHECK (kind IN ('subscription', 'item')),
    CONSTRAINT subscriptions_status_check CHECK (status IN (
        'incomplete', 'upcoming', 'active', 'past_due', 'paused', 'canceled', 'ended',
        'abandoned', 'free_trial'))
);
CREATE INDEX subscriptions_user_idx ON subscriptions (clerk_user_id);
CREATE TRIGGER subscriptions_touch BEFORE UPDATE ON subscriptions
    FOR EACH ROW EXECUTE FUNCTION granary_touch_updated_at();

-- Every delivery, accepted or rejected, exactly as received. This is the audit trail that
-- answers "did the provider call us, and what did we do with it".
CREATE TABLE webhook_events (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider          text NOT NULL,
    -- NULL only for a rejected delivery that carried no usable id.
    event_id          text,
    event_type        text,
    status            text NOT NULL DEFAULT 'received',
    -- Why a delivery was rejected (signature_mismatch, stale_timestamp, ...).
    rejection_reason  text,
    headers           jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- The exact bytes the signature covered. Rejected bodies are truncated (see body_truncated)
    -- so that a flood of junk cannot fill the disk.
    body              bytea NOT NULL,
    body_truncated    boolean NOT NULL DEFAULT false,
    -- The provider's own event time, used to order events that arrive out of order.
    occurred_at       timestamptz,
    received_at       timestamptz NOT NULL DEFAULT now(),
    processed_at      timestamptz,
    process_attempts  integer NOT NULL DEFAULT 0,
    last_error        text,
    CONSTRAINT webhook_events_provider_check CHECK (provider IN ('clerk', 'stripe')),
    CONSTRAINT webhook_events_status_check
        CHECK (status IN ('received', 'processed', 'ignored', 'failed', 'rejected')),
    CONSTRAINT webhook_events_rejected_check
        CHECK ((status = 'rejected') = (rejection_reason IS NOT NULL)),
    CONSTRAINT webhook_events_accepted_have_id CHECK (status = 'rejected' OR event_id IS NOT NULL)
);
-- A duplicate delivery of an accepted event inserts nothing (ON CONFLICT DO NOTHING). Rejected
-- deliveries are outside the index: a forged request must not block the real event's id.
CREATE UNIQUE INDEX webhook_events_provider_event_key ON webhook_events (provider, event_id)
    WHERE status <> 'rejected';
CREATE INDEX webhook_events_received_idx ON webhook_events (received_at DESC);
CREATE INDEX webhook_events_status_idx ON webhook_events (status, received_at DESC);

-- Which rows an event changed: the link the order timeline and the audit follow.
CREATE TABLE webhook_event_effects (
    webhook_event_id  uuid NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    entity            text NOT NULL,
    entity_id         uuid NOT NULL,
    action            text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_event_effects_key PRIMARY KEY (webhook_event_id, entity, entity_id, action)
);
CREATE INDEX webhook_event_effects_entity_idx ON webhook_event_effects (entity, entity_id);

CREATE TABLE payment_transactions (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id             uuid REFERENCES orders (id),
    subscription_id      uuid REFERENCES subscriptions (id),
    provider             text NOT NULL,
    -- The provider's id of the payment (Stripe checkout session / charge / dispute, Clerk
    -- payment attempt). Unique per kind: a replayed event cannot record a payment twice.
    provider_payment_id  text NOT NULL,
    kind                 text NOT NULL,
    status               text NOT NULL,
    amount_cents         bigint NOT NULL,
    currency             text NOT NULL,
    webhook_event_id     uuid REFERENCES webhook_events (id),
    raw                  jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payment_transactions_provider_key UNIQUE (provider, kind, provider_payment_id),
    CONSTRAINT payment_transactions_provider_check CHECK (provider IN ('clerk', 'stripe', 'manual')),
    CONSTRAINT payment_transactions_kind_check CHECK (kind IN ('payment', 'refund', 'dispute')),
    CONSTRAINT payment_transactions_amount_check CHECK (amount_cents >= 0),
    CONSTRAINT payment_transactions_currency_check CHECK (currency ~ '^[A-Z]{3}$')
);
CREATE INDEX payment_transactions_order_idx ON payment_transactions (order_id);

-- A feature a user may use, with the source that granted it. Revocation is by source, so a
-- refund revokes exactly what that purchase granted and never what another one still grants.
CREATE TABLE entitlements (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    profile_id    uuid NOT NULL REFERENCES profiles (id),
    feature_key   text NOT NULL,
    -- 'order_item' (source_id = order_items.id), 'subscription' (source_id = the provider's
    -- subscription item id) or 'manual' (source_id chosen by the operator).
    source_type   text NOT NULL,
    source_id     text NOT NULL,
    granted_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    revoke_reason text,
    CONSTRAINT entitlements_source_feature_key UNIQUE (source_type, source_id, feature_key),
    CONSTRAINT entitlements_source_type_check
        CHECK (source_type IN ('order_item', 'subscription', 'manual')),
    CONSTRAINT entitlements_feature_key_check CHECK (feature_key ~ '^[A-Za-z0-9_.:-]{1,100}$')
);
-- "Does this user have feature X now" is the hot read.
CREATE INDEX entitlements_profile_active_idx ON entitlements (profile_id, feature_key)
    WHERE revoked_at IS NULL;

CREATE TABLE digital_assets (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    product_id     uuid NOT NULL REFERENCES products (id),
    title          text NOT NULL,
    -- Where the seller uploaded the file (staging key in the asset storage).
    file_path      text NOT NULL,
    -- Permanent, content-addressed key once finalized.
    storage_key    text,
    status         text NOT NULL DEFAULT 'pending',
    size_bytes     bigint,
    content_type   text,
    sha256         text,
    is_active      boolean NOT NULL DEFAULT true,
    last_error     text,
    finalized_at   timestamptz,
    deleted_at     timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT digital_assets_status_check CHECK (status IN ('pending', 'ready', 'failed')),
    CONSTRAINT digital_assets_ready_check
        CHECK (status <> 'ready' OR (storage_key IS NOT NULL AND sha256 IS NOT NULL AND size_bytes IS NOT NULL)),
    CONSTRAINT digital_assets_size_check CHECK (size_bytes IS NULL OR size_bytes >= 0),
    CONSTRAINT digital_assets_file_path_check
        CHECK (length(file_path) BETWEEN 1 AND 1024 AND file_path !~ '(^/|\.\./|^\.\.$)')
);
CREATE INDEX digital_assets_product_idx ON digital_assets (product_id) WHERE deleted_at IS NULL;
CREATE TRIGGER digital_assets_touch BEFORE UPDATE ON digital_assets
    FOR EACH ROW EXECUTE FUNCTION granary_touch_updated_at();

CREATE TABLE download_grants (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- At least 128 bits from a CSPRNG; listed only to its owner.
    token           text NOT NULL,
    profile_id      uuid NOT NULL REFERENCES profiles (id),
    order_item_id   uuid NOT NULL REFERENCES order_items (id),
    asset_id        uuid NOT NULL REFERENCES digital_assets (id),
    expires_at      timestamptz,
    max_downloads   integer,
    download_count  integer NOT NULL DEFAULT 0,
    revoked_at      timestamptz,
    revoke_reason   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT download_grants_token_key UNIQUE (token),
    -- fulfill_order and issue_grants may both run for the same item: one grant wins.
    CONSTRAINT download_grants_item_asset_key UNIQUE (order_item_id, asset_id),
    CONSTRAINT download_grants_token_length CHECK (length(token) >= 22),
    CONSTRAINT download_grants_max_check CHECK (max_downloads IS NULL OR max_downloads > 0),
    -- The access route counts with a conditional UPDATE; this makes overshoot impossible
    -- even if that condition were ever wrong.
    CONSTRAINT download_grants_count_check
        CHECK (download_count >= 0 AND (max_downloads IS NULL OR download_count <= max_downloads))
);
CREATE INDEX download_grants_profile_idx ON download_grants (profile_id, created_at DESC);
CREATE INDEX download_grants_asset_idx ON download_grants (asset_id);

CREATE TABLE download_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    grant_id    uuid NOT NULL REFERENCES download_grants (id),
    profile_id  uuid NOT NULL REFERENCES profiles (id),
    ip          inet,
    user_agent  text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX download_events_grant_idx ON download_events (grant_id, created_at);

CREATE TABLE service_offers (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    product_id            uuid NOT NULL REFERENCES products (id),
    duration_minutes      integer NOT NULL DEFAULT 60,
    -- Bookings allowed per start time.
    capacity              integer NOT NULL DEFAULT 1,
    -- How far ahead a slot may be booked, and how soon at the earliest.
    booking_window_days   integer NOT NULL DEFAULT 60,
    min_notice_hours      integer NOT NULL DEFAULT 0,
    timezone              text NOT NULL DEFAULT 'UTC',
    location              text NOT NULL DEFAULT '',
    instructions          text NOT NULL DEFAULT '',
    is_active             boolean NOT NULL DEFAULT true,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT service_offers_product_id_key UNIQUE (product_id),
    CONSTRAINT service_offers_duration_check CHECK (duration_minutes BETWEEN 5 AND 1440),
    CONSTRAINT service_offers_capacity_check CHECK (capacity BETWEEN 1 AND 10000),
    CONSTRAINT service_offers_window_check CHECK (booking_window_days BETWEEN 1 AND 730),
    CONSTRAINT service_offers_notice_check CHECK (min_notice_hours BETWEEN 0 AND 8760)
);
CREATE TRIGGER service_offers_touch BEFORE UPDATE ON service_offers
    FOR EACH ROW EXECUTE FUNCTION granary_touch_updated_at();

CREATE TABLE bookings (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    profile_id        uuid NOT NULL REFERENCES profiles (id),
    service_offer_id  uuid NOT NULL REFERENCES service_offers (id),
    -- Set when fulfillment created the booking request for a paid service item.
    order_item_id     uuid REFERENCES order_items (id),
    status            text NOT NULL DEFAULT 'requested',
    starts_at         timestamptz,
    notes             text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT bookings_status_check
        CHECK (status IN ('requested', 'confirmed', 'canceled', 'completed')),
    CONSTRAINT bookings_notes_check CHECK (length(notes) <= 4000)
);
-- fulfill_order may run twice: one booking request per paid service item.
CREATE UNIQUE INDEX bookings_order_item_key ON bookings (order_item_id) WHERE order_item_id IS NOT NULL;
CREATE INDEX bookings_profile_idx ON bookings (profile_id, created_at DESC);
-- Capacity checks count live bookings per slot.
CREATE INDEX bookings_slot_idx ON bookings (service_offer_id, starts_at) WHERE status <> 'canceled';
CREATE TRIGGER bookings_touch BEFORE UPDATE ON bookings
    FOR EACH ROW EXECUTE FUNCTION granary_touch_updated_at();

-- One row per email, written before anything is sent; `send_email` sends it with the dedupe
-- key as Resend's Idempotency-Key, so a retried job cannot send a second copy.
CREATE TABLE emails (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    dedupe_key           text NOT NULL,
    kind                 text NOT NULL,
    to_address           text,
    subject              text NOT NULL,
    html_body            text NOT NULL,
    text_body            text NOT NULL,
    -- pending → sent | failed | skipped (no recipient) | outbox (development, no Resend key)
    status               text NOT NULL DEFAULT 'pending',
    skip_reason          text,
    provider_message_id  text,
    last_error           text,
    order_id             uuid REFERENCES orders (id),
    profile_id           uuid REFERENCES profiles (id),
    sent_at              timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT emails_dedupe_key UNIQUE (dedupe_key),
    CONSTRAINT emails_status_check CHECK (status IN ('pending', 'sent', 'failed', 'skipped', 'outbox')),
    CONSTRAINT emails_skipped_check CHECK ((status = 'skipped') = (skip_reason IS NOT NULL))
);
CREATE INDEX emails_order_idx ON emails (order_id);
CREATE TRIGGER emails_touch BEFORE UPDATE ON emails
    FOR EACH ROW EXECUTE FUNCTION granary_touch_updated_at();

-- Who did what by hand (requeue, cancel, replay, revoke), and why.
CREATE TABLE operator_actions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor        text NOT NULL,
    action       text NOT NULL,
    target_type  text NOT NULL,
    target_id    text NOT NULL,
    reason       text,
    details      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX operator_actions_target_idx ON operator_actions (target_type, target_id);
