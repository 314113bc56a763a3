-- Credits: packs bought with a payment, plan allowances per billing period, and an atomic,
-- idempotent, refund-aware ledger. Every change is an entry; the balance per user and unit is
-- changed in the same statement as its entry (see jobs/src/credits.rs).

-- What a product grants per unit bought (a pack) or per billing period (a plan's allowance):
-- `[{"unit": "tokens", "amount": 100000}]`.
ALTER TABLE products ADD COLUMN credit_grants jsonb NOT NULL DEFAULT '[]'::jsonb;
ALTER TABLE products ADD CONSTRAINT products_credit_grants_check CHECK (jsonb_typeof(credit_grants) = 'array');

CREATE TABLE credit_balances (
    profile_id                uuid NOT NULL REFERENCES profiles (id),
    unit                      text NOT NULL,
    -- Everything spendable: the plan allowance left plus packs.
    balance                   bigint NOT NULL DEFAULT 0,
    -- This period's plan allowance in full (the usage summary's limit).
    allowance                 bigint NOT NULL DEFAULT 0,
    -- The part of `balance` that is this period's plan allowance. Consumption spends it first
    -- (it lapses at the next period); a refund takes back packs only.
    allowance_remaining       bigint NOT NULL DEFAULT 0,
    -- The period whose allowance is in force: an older period's event cannot reset it again.
    allowance_period_start    timestamptz,
    updated_at                timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT credit_balances_key PRIMARY KEY (profile_id, unit),
    -- Consumption never takes a balance below zero; the statements check it, this enforces it.
    CONSTRAINT credit_balances_nonnegative CHECK (balance >= 0 AND allowance_remaining >= 0 AND allowance_remaining <= balance),
    CONSTRAINT credit_balances_unit_check CHECK (unit ~ '^[a-z0-9_.:-]{1,64}$')
);
CREATE TRIGGER credit_balances_touch BEFORE UPDATE ON credit_balances
    FOR EACH ROW EXECUTE FUNCTION granary_touch_updated_at();

CREATE TABLE credit_entries (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    profile_id       uuid NOT NULL REFERENCES profiles (id),
    unit             text NOT NULL,
    -- Signed: + grants, - consumption, refunds and operator removals.
    amount           bigint NOT NULL,
    -- The balance right after this entry.
    balance_after    bigint NOT NULL,
    reason           text NOT NULL,
    -- order_item | subscription_period | consumption | refund | operator
    source_type      text NOT NULL,
    source_id        text NOT NULL,
    -- What a refund could not take back because it was already spent.
    shortfall        bigint NOT NULL DEFAULT 0,
    -- The order an entry belongs to (order timeline, receipt).
    order_id         uuid REFERENCES orders (id),
    -- A retried job, a duplicate webhook or a repeated request finds its entry here.
    idempotency_key  text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT credit_entries_idempotency_key UNIQUE (idempotency_key),
    CONSTRAINT credit_entries_source_type_check
        CHECK (source_type IN ('order_item', 'subscription_period', 'consumption', 'refund', 'operator')),
    CONSTRAINT credit_entries_shortfall_check CHECK (shortfall >= 0)
);
CREATE INDEX credit_entries_profile_idx ON credit_entries (profile_id, id DESC);
CREATE INDEX credit_entries_order_idx ON credit_entries (order_id) WHERE order_id IS NOT NULL;
