-- The operator console (/console/): one-time login links, the sessions they open, and a search
-- index for the jobs an operator looks for.

-- A login link, as printed by `granary-worker console login-link`. Only the SHA-256 of its token
-- is kept; it opens one session, once, before it expires.
CREATE TABLE console_login_links (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    token_hash  bytea NOT NULL UNIQUE,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);

-- A console session: the cookie holds the token, the row its SHA-256. Every form carries the
-- session's CSRF token.
CREATE TABLE console_sessions (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    token_hash    bytea NOT NULL UNIQUE,
    csrf_token    text NOT NULL,
    -- Who acts through it: `console:<who made the link>` or `admin:<clerk user id>`.
    actor         text NOT NULL,
    -- How it was opened: a login link, or an admin's Clerk session.
    opened_via    text NOT NULL,
    login_link_id uuid REFERENCES console_login_links (id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    ended_at      timestamptz,
    ended_by      text,
    CONSTRAINT console_sessions_opened_via_check CHECK (opened_via IN ('login_link', 'clerk'))
);
CREATE INDEX console_sessions_live_idx ON console_sessions (expires_at) WHERE ended_at IS NULL;

-- Searching jobs by the text of their arguments and errors. Only the jobs an operator searches
-- for are indexed (failed, cancelled, retrying): completed jobs, the bulk of the table, cost the
-- runtime no index entries.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX jobs_search_idx ON jobs
    USING gin ((args::text || ' ' || coalesce(last_error, '')) gin_trgm_ops)
    WHERE state IN ('failed', 'cancelled', 'retrying');

-- The console's throughput charts count attempts by start time over the last hour and day.
-- Attempts are appended in time order, so a BRIN index answers that at almost no write cost.
CREATE INDEX job_attempts_started_brin ON job_attempts USING brin (started_at);
