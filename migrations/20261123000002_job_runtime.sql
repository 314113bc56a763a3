-- What Granary adds to apalis-postgres's queue (see design/QUEUE.md). apalis keeps one row per
-- job in `apalis.jobs` and overwrites its last result on every attempt; an operator needs the
-- whole history and the business links, which live here.

-- One row per attempt, written when the attempt starts and completed when it ends, so that an
-- attempt whose worker was killed still shows (outcome stays 'running' until rescue marks it
-- 'abandoned').
CREATE TABLE job_attempts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id       text NOT NULL,
    queue        text NOT NULL,
    attempt      integer NOT NULL,
    worker_id    text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at  timestamptz,
    outcome      text NOT NULL DEFAULT 'running',
    -- The error with its whole cause chain (or the panic message).
    error        text,
    -- When a retry is due, as decided by the backoff (or the provider's Retry-After).
    retry_at     timestamptz,
    CONSTRAINT job_attempts_outcome_check CHECK (outcome IN (
        'running', 'succeeded', 'retry', 'failed', 'discarded', 'panicked', 'abandoned')),
    CONSTRAINT job_attempts_attempt_check CHECK (attempt >= 1)
);
CREATE INDEX job_attempts_job_idx ON job_attempts (job_id, attempt);
CREATE INDEX job_attempts_running_idx ON job_attempts (worker_id) WHERE outcome = 'running';

-- Business links of a job: its kind, its dedupe key and the order (or event, asset, user) it
-- works for. "Requeue every failed job of order X" and the order timeline read this.
CREATE TABLE job_refs (
    job_id            text PRIMARY KEY,
    queue             text NOT NULL,
    dedupe_key        text,
    order_id          uuid REFERENCES orders (id),
    webhook_event_id  uuid REFERENCES webhook_events (id),
    asset_id          uuid REFERENCES digital_assets (id),
    email_id          uuid REFERENCES emails (id),
    clerk_user_id     text,
    -- Attempts allowed before the job is left failed for an operator.
    max_attempts      integer NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_refs_dedupe_idx ON job_refs (queue, dedupe_key) WHERE dedupe_key IS NOT NULL;
CREATE INDEX job_refs_order_idx ON job_refs (order_id) WHERE order_id IS NOT NULL;
CREATE INDEX job_refs_event_idx ON job_refs (webhook_event_id) WHERE webhook_event_id IS NOT NULL;

-- The `probe` job: a canary an operator (or `doctor`) enqueues to prove the workers are alive
-- end to end, and the job kind the runtime's own tests steer (fail N times, fail permanently,
-- panic, sleep). Every run is recorded; its effect is idempotent by key, like every real job.
CREATE TABLE job_probe_runs (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id     text NOT NULL,
    probe_key  text NOT NULL,
    attempt    integer NOT NULL,
    worker_id  text NOT NULL,
    ran_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX job_probe_runs_key_idx ON job_probe_runs (probe_key);

CREATE TABLE job_probe_effects (
    probe_key   text PRIMARY KEY,
    job_id      text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
