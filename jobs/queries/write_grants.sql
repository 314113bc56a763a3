-- The digital half of fulfilling an order, in one statement: see `write_grants` in
-- jobs/src/orders/fulfillment.rs.
WITH o AS (
    SELECT id, public_id, status, customer_profile_id, total_cents, currency
    FROM orders WHERE id = $1 FOR UPDATE
), items AS MATERIALIZED (
    -- The order's own items first (see above), and only if it is paid.
    SELECT oi.id, oi.product_id, oi.product_name, oi.quantity, oi.created_at, o.customer_profile_id
    FROM o JOIN order_items oi ON oi.order_id = o.id
    WHERE o.status IN ('paid', 'fulfilled')
), ent AS (
    INSERT INTO entitlements (profile_id, feature_key, source_type, source_id)
    SELECT i.customer_profile_id, f.feature, 'order_item', i.id::text
    FROM items i JOIN products p ON p.id = i.product_id
    CROSS JOIN LATERAL unnest(p.feature_keys) AS f(feature)
    WHERE $5
    ON CONFLICT (source_type, source_id, feature_key) DO NOTHING
    RETURNING 1
), fill AS (
    -- A placeholder becomes the real grant (same id and token) for the item's first
    -- ready asset; the clock starts now.
    UPDATE download_grants g SET asset_id = x.asset_id, created_at = now(),
           expires_at = CASE WHEN x.days IS NULL THEN NULL ELSE now() + make_interval(days => x.days) END,
           max_downloads = x.max_downloads
    FROM (SELECT DISTINCT ON (i.id) i.id AS item_id, a.id AS asset_id,
                 coalesce(p.download_expiry_days, $3) AS days, coalesce(p.download_max, $4) AS max_downloads
          FROM items i JOIN products p ON p.id = i.product_id JOIN digital_assets a ON a.product_id = p.id
          WHERE a.status = 'ready' AND a.is_active AND a.deleted_at IS NULL
            AND ($2::uuid IS NULL OR a.id = $2)
          ORDER BY i.id, a.created_at, a.id) x
    WHERE g.order_item_id = x.item_id AND g.asset_id IS NULL AND g.revoked_at IS NULL
    RETURNING g.order_item_id, g.asset_id
), gr AS (
    INSERT INTO download_grants (token, profile_id, order_item_id, asset_id, expires_at, max_downloads)
    SELECT encode(gen_random_bytes(20), 'hex'), i.customer_profile_id, i.id, a.id,
           CASE WHEN coalesce(p.download_expiry_days, $3) IS NULL THEN NULL
                ELSE now() + make_interval(days => coalesce(p.download_expiry_days, $3)) END,
           coalesce(p.download_max, $4)
    FROM items i
    JOIN products p ON p.id = i.product_id
    JOIN digital_assets a ON a.product_id = p.id
    WHERE a.status = 'ready' AND a.is_active AND a.deleted_at IS NULL
      AND ($2::uuid IS NULL OR a.id = $2)
      AND NOT EXISTS (SELECT 1 FROM fill f WHERE f.order_item_id = i.id AND f.asset_id = a.id)
      -- An operator revoked the item's placeholder: no grant replaces it.
      AND NOT EXISTS (SELECT 1 FROM download_grants x WHERE x.order_item_id = i.id
                      AND x.asset_id IS NULL AND x.revoked_at IS NOT NULL)
    ON CONFLICT (order_item_id, asset_id) DO NOTHING
    RETURNING 1
), placeholder AS (
    -- A digital product with no ready file yet, as the starter does it; a credit pack
    -- without any asset row is not waiting for a file. The buyer sees "file coming".
    INSERT INTO download_grants (token, profile_id, order_item_id, asset_id, max_downloads)
    SELECT encode(gen_random_bytes(20), 'hex'), i.customer_profile_id, i.id, NULL, coalesce(p.download_max, $4)
    FROM items i JOIN products p ON p.id = i.product_id
    WHERE $5 AND p.product_type = 'digital'
      AND NOT EXISTS (SELECT 1 FROM digital_assets a WHERE a.product_id = p.id
                      AND a.status = 'ready' AND a.is_active AND a.deleted_at IS NULL)
      AND (EXISTS (SELECT 1 FROM digital_assets a WHERE a.product_id = p.id AND a.deleted_at IS NULL)
           OR jsonb_array_length(p.credit_grants) = 0)
      AND NOT EXISTS (SELECT 1 FROM download_grants g WHERE g.order_item_id = i.id)
    ON CONFLICT (order_item_id) WHERE asset_id IS NULL DO NOTHING
    RETURNING 1
), done AS (
    UPDATE orders SET status = 'fulfilled', fulfilled_at = coalesce(fulfilled_at, now())
    WHERE id = $1 AND $5 AND status = 'paid'
)
SELECT o.id, o.public_id, o.status AS "status: OrderStatus", o.customer_profile_id, o.total_cents, o.currency,
       ARRAY(SELECT i.product_name || ' × ' || i.quantity FROM items i ORDER BY i.created_at, i.id) AS "items!",
       EXISTS (SELECT 1 FROM items i JOIN products p ON p.id = i.product_id
               LEFT JOIN service_offers s ON s.product_id = p.id
               WHERE p.product_type = 'service' OR s.id IS NOT NULL) AS "services!",
       EXISTS (SELECT 1 FROM items i JOIN products p ON p.id = i.product_id
               WHERE jsonb_array_length(p.credit_grants) > 0) AS "packs!",
       (SELECT count(*) FROM ent) AS "entitlements!",
       (SELECT count(*) FROM gr) + (SELECT count(*) FROM fill) AS "grants!",
       EXISTS (SELECT 1 FROM download_grants g JOIN items i ON i.id = g.order_item_id
               WHERE g.asset_id IS NOT NULL) AS "had_grants!",
       EXISTS (SELECT 1 FROM placeholder)
           OR EXISTS (SELECT 1 FROM download_grants g JOIN items i ON i.id = g.order_item_id
                      WHERE g.asset_id IS NULL AND g.revoked_at IS NULL) AS "files_coming!"
FROM o
