-- A refund asked for from Granary (an operator or the product's seller), carried out by the
-- `refund_payment` job through Stripe's `POST /v1/refunds` under an idempotency key per row. The
-- refund itself is recorded when Stripe's `charge.refunded` arrives, as for a refund made in
-- Stripe's own dashboard.
CREATE TABLE refund_requests (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id         uuid NOT NULL REFERENCES orders (id),
    amount_cents     bigint NOT NULL,
    currency         text NOT NULL,
    reason           text NOT NULL,
    actor            text NOT NULL,
    status           text NOT NULL DEFAULT 'queued',
    stripe_refund_id text,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    submitted_at     timestamptz,
    CONSTRAINT refund_requests_amount_check CHECK (amount_cents > 0 AND amount_cents <= 1000000000000),
    CONSTRAINT refund_requests_currency_check CHECK (currency ~ '^[A-Z]{3}$'),
    CONSTRAINT refund_requests_text_check CHECK (length(reason) BETWEEN 1 AND 500
        AND length(actor) BETWEEN 1 AND 200 AND length(coalesce(last_error, '')) <= 4000
        AND length(coalesce(stripe_refund_id, '')) <= 255),
    CONSTRAINT refund_requests_status_check CHECK (status IN ('queued', 'submitted', 'failed')),
    CONSTRAINT refund_requests_submitted_check
        CHECK (status <> 'submitted' OR (stripe_refund_id IS NOT NULL AND submitted_at IS NOT NULL))
);
CREATE INDEX refund_requests_order_idx ON refund_requests (order_id);
