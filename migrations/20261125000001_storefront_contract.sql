-- The starter's storefront contract (design/STOREFRONT.md §6): the fields its frontend reads
-- that Granary did not keep, work orders for paid service items, and the billing-sync record
-- behind /api/account/subscriptions/status/. Rules that several queries share live here once,
-- as inlinable SQL functions, so the catalog, order creation and the doctor cannot disagree.

-- What the starter's profile carries beside Granary's.
ALTER TABLE profiles ADD COLUMN image_url text;
ALTER TABLE customer_accounts ADD COLUMN tax_id text;

-- A one-line pitch shown on catalog cards; and the seller's chosen price (Django's
-- `active_price` FK). When it is unset, or no longer purchasable, the catalog falls back to the
-- active default price, then the cheapest active one.
ALTER TABLE products ADD COLUMN tagline text NOT NULL DEFAULT '';
ALTER TABLE products ADD COLUMN active_price_id uuid REFERENCES prices (id) ON DELETE SET NULL;
ALTER TABLE products ADD CONSTRAINT products_tagline_check CHECK (length(tagline) <= 255);

-- The starter's service-offer fields beside Granary's booking ones. `session_minutes` is
-- Granary's `duration_minutes`. `metadata.delivery_mode` = physical/shipped makes the work
-- orders of this offer `physical_shipped`.
ALTER TABLE service_offers ADD COLUMN delivery_days integer NOT NULL DEFAULT 7;
ALTER TABLE service_offers ADD COLUMN revision_count integer NOT NULL DEFAULT 0;
ALTER TABLE service_offers ADD COLUMN onboarding_instructions text NOT NULL DEFAULT '';
ALTER TABLE service_offers ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE service_offers ADD CONSTRAINT service_offers_delivery_days_check CHECK (delivery_days BETWEEN 0 AND 3650);
ALTER TABLE service_offers ADD CONSTRAINT service_offers_revision_count_check CHECK (revision_count BETWEEN 0 AND 1000);
ALTER TABLE service_offers ADD CONSTRAINT service_offers_metadata_check CHECK (jsonb_typeof(metadata) = 'object');

-- "Published and purchasable": the one rule the catalog, order creation and the doctor share.
-- A SQL-language function of one expression is inlined by the planner, so it costs nothing.
CREATE FUNCTION granary_purchasable(p products, pr prices) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT p.visibility = 'published' AND p.deleted_at IS NULL
       AND pr.product_id = p.id AND pr.is_active AND pr.deleted_at IS NULL
$$;

-- "This grant can be downloaded now": the download list shows it and the access route counts
-- under it. Inlined into the access route's conditional UPDATE, so a concurrent request
-- re-checks it against the row the previous one left (no overshoot of the limit).
CREATE FUNCTION granary_can_download(g download_grants, a digital_assets) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT g.asset_id = a.id AND g.revoked_at IS NULL
       AND (g.expires_at IS NULL OR g.expires_at > now())
       AND (g.max_downloads IS NULL OR g.download_count < g.max_downloads)
       AND a.status = 'ready' AND a.is_active AND a.deleted_at IS NULL
$$;

-- A paid service item opens one work order: the seller moves it from `requested` to
-- `completed` (or `canceled`), the buyer follows it. Unique by order item, so a retried
-- fulfillment opens it once.
CREATE TABLE work_orders (
    id                        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    order_item_id             uuid NOT NULL REFERENCES order_items (id),
    profile_id                uuid NOT NULL REFERENCES profiles (id),
    product_id                uuid NOT NULL REFERENCES products (id),
    status                    text NOT NULL DEFAULT 'requested',
    delivery_mode             text NOT NULL DEFAULT 'downloadable',
    customer_request          text NOT NULL DEFAULT '',
    delivery_notes            text NOT NULL DEFAULT '',
    due_at                    timestamptz,
    completed_at              timestamptz,
    shipped_at                timestamptz,
    shipping_carrier          text NOT NULL DEFAULT '',
    shipping_tracking_number  text NOT NULL DEFAULT '',
    shipping_tracking_url     text NOT NULL DEFAULT '',
    -- The download the seller attached for delivery, when there is one.
    download_grant_id         uuid REFERENCES download_grants (id),
    metadata                  jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT work_orders_order_item_key UNIQUE (order_item_id),
    CONSTRAINT work_orders_status_check
        CHECK (status IN ('requested', 'in_progress', 'ready_for_delivery', 'completed', 'canceled')),
    CONSTRAINT work_orders_delivery_mode_check CHECK (delivery_mode IN ('downloadable', 'physical_shipped')),
    CONSTRAINT work_orders_text_check CHECK (length(customer_request) <= 4000 AND length(delivery_notes) <= 4000
        AND length(shipping_carrier) <= 100 AND length(shipping_tracking_number) <= 200
        AND length(shipping_tracking_url) <= 2000),
    CONSTRAINT work_orders_completed_check CHECK (status <> 'completed' OR completed_at IS NOT NULL)
);
CREATE INDEX work_orders_profile_idx ON work_orders (profile_id, created_at DESC);
CREATE INDEX work_orders_product_idx ON work_orders (product_id, created_at DESC);
CREATE TRIGGER work_orders_touch BEFORE UPDATE ON work_orders
    FOR EACH ROW EXECUTE FUNCTION granary_touch_updated_at();

-- Every status change of a work order: who moved it, from what, to what, and the note.
CREATE TABLE work_order_events (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    work_order_id  uuid NOT NULL REFERENCES work_orders (id) ON DELETE CASCADE,
    actor          text NOT NULL,
    from_status    text,
    to_status      text NOT NULL,
    note           text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX work_order_events_order_idx ON work_order_events (work_order_id, id);

-- The last pull of a user's subscriptions from Clerk's Backend API (`?refresh=1`). Freshness is
-- the later of this and the newest Clerk billing event applied for the user.
CREATE TABLE billing_sync (
    clerk_user_id    text PRIMARY KEY,
    last_attempt_at  timestamptz NOT NULL,
    last_success_at  timestamptz,
    -- NULL after a success; else a short code (clerk_unreachable, clerk_error, not_configured).
    last_error_code  text,
    last_error       text,
    -- Items the last pull could not apply (it still succeeded for the others).
    partial_errors   integer NOT NULL DEFAULT 0
);

-- What the starter's order carries beside Granary's: the buyer's note, and what a client-side
-- confirm reported (Clerk checkout id, the provider's reference).
ALTER TABLE orders ADD COLUMN notes text NOT NULL DEFAULT '';
ALTER TABLE orders ADD COLUMN clerk_checkout_id text;
ALTER TABLE orders ADD COLUMN external_reference text;
ALTER TABLE orders ADD CONSTRAINT orders_notes_check CHECK (length(notes) <= 4000);
