-- An order sold through a Stripe Checkout Session that Granary creates for it. The order row is
-- committed before Stripe is called; the session's id, URL (`checkout_url`) and expiry are
-- stored once Stripe answers, so a retried create finds them.
ALTER TABLE orders
    ADD COLUMN stripe_checkout boolean NOT NULL DEFAULT false,
    ADD COLUMN stripe_checkout_session_id text,
    ADD COLUMN checkout_expires_at timestamptz;
ALTER TABLE orders ADD CONSTRAINT orders_stripe_checkout_session_key
    UNIQUE (stripe_checkout_session_id);
ALTER TABLE orders ADD CONSTRAINT orders_stripe_checkout_session_check
    CHECK (stripe_checkout_session_id IS NULL
           OR (stripe_checkout AND length(stripe_checkout_session_id) BETWEEN 3 AND 255
               AND checkout_expires_at IS NOT NULL));
