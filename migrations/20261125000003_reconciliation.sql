-- Recovering what a webhook never delivered: Stripe events found by the reconciliation sweep
-- are stored as webhook events (marked as found), and each sweep is a row the operator and
-- doctor read.

-- How an event reached Granary: delivered by the provider, or found by a reconciliation sweep.
-- Either way it is unique by (provider, event_id), so whichever comes second inserts nothing.
ALTER TABLE webhook_events ADD COLUMN found_by text NOT NULL DEFAULT 'delivery';
ALTER TABLE webhook_events ADD CONSTRAINT webhook_events_found_by_check
    CHECK (found_by IN ('delivery', 'reconciliation'));
ALTER TABLE webhook_events ADD COLUMN reconcile_run_id uuid;
CREATE INDEX webhook_events_reconcile_run_idx ON webhook_events (reconcile_run_id)
    WHERE reconcile_run_id IS NOT NULL;

-- One sweep: Stripe's events of a window, or Clerk subscriptions of users whose billing looks
-- stale. Written by the sweep job on every attempt, so a failing sweep is visible here (and in
-- doctor) as well as in the jobs table.
CREATE TABLE reconcile_runs (
    id            uuid PRIMARY KEY,
    provider      text NOT NULL,
    -- 'schedule' or 'operator'.
    trigger       text NOT NULL,
    -- Stripe: events created at or after this. NULL: the configured look-back, from the run.
    since         timestamptz,
    status        text NOT NULL DEFAULT 'queued',
    attempts      integer NOT NULL DEFAULT 0,
    -- Stripe: events listed; Clerk: users pulled.
    examined      integer NOT NULL DEFAULT 0,
    -- Stripe: events never seen before, now stored and applied; Clerk: pulls that succeeded.
    recovered     integer NOT NULL DEFAULT 0,
    -- Short code of the last failure (stripe_unauthorized, stripe_rate_limited, stripe_error,
    -- stripe_unreachable, clerk_error, ...) and its message.
    error_code    text,
    error         text,
    job_id        text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    CONSTRAINT reconcile_runs_provider_check CHECK (provider IN ('stripe', 'clerk')),
    CONSTRAINT reconcile_runs_trigger_check CHECK (trigger IN ('schedule', 'operator')),
    CONSTRAINT reconcile_runs_status_check
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed'))
);
CREATE INDEX reconcile_runs_provider_idx ON reconcile_runs (provider, created_at DESC);
