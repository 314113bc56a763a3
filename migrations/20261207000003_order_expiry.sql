-- An unpaid order expires: when its Checkout Session expires (`checkout.session.expired`), or
-- when it has been pending longer than PENDING_ORDER_TTL with no session still open (the
-- worker's sweep). A payment that arrives later still pays it: the money wins.
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('pending', 'paid', 'fulfilled', 'canceled', 'refunded', 'disputed', 'failed', 'expired'));
ALTER TABLE orders DROP CONSTRAINT orders_paid_at_check;
ALTER TABLE orders ADD CONSTRAINT orders_paid_at_check
    CHECK (status IN ('pending', 'canceled', 'failed', 'expired') OR paid_at IS NOT NULL);
ALTER TABLE orders
    ADD COLUMN expired_at timestamptz,
    ADD COLUMN expire_reason text;
ALTER TABLE orders ADD CONSTRAINT orders_expire_check
    CHECK ((expired_at IS NULL) = (expire_reason IS NULL)
           AND (expire_reason IS NULL OR length(expire_reason) BETWEEN 1 AND 500));
-- The sweep's scan: pending orders by age.
CREATE INDEX orders_pending_created_idx ON orders (created_at) WHERE status = 'pending';
