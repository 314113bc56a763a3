-- Money is checked, never assumed; every input has a bound here as well as at the edge
-- (jobs/src/bounds.rs gives the caller a 400 naming the field; these hold for every path).

-- A payment is `succeeded`, or `duplicate`: a second distinct payment for an order another
-- payment already paid (money to give back; `doctor` lists it).
ALTER TABLE payment_transactions ADD CONSTRAINT payment_transactions_status_check
    CHECK (status IN ('succeeded', 'duplicate'));

-- Spans stay inside PostgreSQL's timestamp range whatever is added to now(): ten years at most.
-- Rows written before the bound are brought inside it rather than left to fail every
-- fulfillment of their product ("timestamp out of range").
UPDATE products SET download_expiry_days = 3650 WHERE download_expiry_days > 3650;
UPDATE products SET download_max = 1000000 WHERE download_max > 1000000;
ALTER TABLE products DROP CONSTRAINT products_download_expiry_check,
    ADD CONSTRAINT products_download_expiry_check CHECK (download_expiry_days BETWEEN 1 AND 3650);
ALTER TABLE products DROP CONSTRAINT products_download_max_check,
    ADD CONSTRAINT products_download_max_check CHECK (download_max BETWEEN 1 AND 1000000);
ALTER TABLE download_grants ADD CONSTRAINT download_grants_expires_check
    CHECK (expires_at IS NULL OR expires_at < '2200-01-01'::timestamptz);

-- Free text. Lengths are characters; metadata is bounded at 16 KiB at the edge (compact JSON),
-- and at 64 KiB of jsonb's text here (its text form adds spaces). NOT VALID: every new or changed
-- row is held to them at once; a row written before the bound is not rewritten by this
-- migration (it would fail the deploy on a shop that has one) and `VALIDATE CONSTRAINT` can
-- follow once it is trimmed.
ALTER TABLE products ADD CONSTRAINT products_text_check
    CHECK (length(description) <= 10000 AND octet_length(metadata::text) <= 65536) NOT VALID;
ALTER TABLE prices ADD CONSTRAINT prices_text_check
    CHECK (length(name) <= 200 AND length(clerk_plan_id) <= 100 AND length(clerk_price_id) <= 100
           AND octet_length(metadata::text) <= 65536) NOT VALID;
ALTER TABLE prices ADD CONSTRAINT prices_amount_max_check CHECK (amount_cents <= 100000000000);
ALTER TABLE customer_accounts ADD CONSTRAINT customer_accounts_text_check
    CHECK (length(full_name) <= 200 AND length(company_name) <= 200 AND length(phone) <= 100
           AND length(billing_email) <= 254 AND octet_length(metadata::text) <= 65536) NOT VALID;
ALTER TABLE service_offers ADD CONSTRAINT service_offers_text_check
    CHECK (length(location) <= 200 AND length(instructions) <= 10000
           AND length(onboarding_instructions) <= 10000 AND octet_length(metadata::text) <= 65536) NOT VALID;
-- The edge checks the name against the IANA database; here, its shape.
ALTER TABLE service_offers ADD CONSTRAINT service_offers_timezone_check
    CHECK (timezone ~ '^[A-Za-z0-9_+/-]{1,100}$') NOT VALID;

-- A timed booking holds its interval: capacity counts the sessions that overlap, not only those
-- that start at the same minute. The end is the start plus the offer's length when booked.
ALTER TABLE bookings ADD COLUMN ends_at timestamptz;
UPDATE bookings b SET ends_at = b.starts_at + make_interval(mins => s.duration_minutes)
FROM service_offers s WHERE s.id = b.service_offer_id AND b.starts_at IS NOT NULL;
ALTER TABLE bookings ADD CONSTRAINT bookings_interval_check
    CHECK ((starts_at IS NULL AND ends_at IS NULL) OR (starts_at IS NOT NULL AND ends_at > starts_at));
CREATE INDEX bookings_offer_time_idx ON bookings (service_offer_id, starts_at) WHERE starts_at IS NOT NULL;
