-- The one statement that writes jobs, as a function, so that a statement of Granary's can write
-- its own rows and enqueue the job that follows from them in one round trip (a payment and the
-- order's fulfillment; an email row and its sending). `queue::enqueue::insert` (every single and
-- batched enqueue, ingest's group commit included) and those statements all call it; nothing
-- else writes `jobs`.
--
-- `batch` is a JSON array of jobs ({id, queue, args, max_attempts, run_at, dedupe_key, order_id,
-- webhook_event_id, asset_id, email_id, clerk_user_id}; a null run_at is now). With `wake`, one
-- NOTIFY per distinct queue is sent at commit; without it the caller wakes the workers after its
-- commit (PostgreSQL serialises the commits of transactions that notify). PL/pgSQL, so the
-- statement's plan is cached for the session. Returns the number of jobs written.
CREATE FUNCTION granary_insert_jobs(batch jsonb, wake boolean) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer;
BEGIN
    WITH i AS (
        SELECT * FROM jsonb_to_recordset(batch) AS i(
            id text, queue text, args jsonb, max_attempts int4, run_at timestamptz,
            dedupe_key text, order_id uuid, webhook_event_id uuid, asset_id uuid, email_id uuid,
            clerk_user_id text)
    ), job AS (
        INSERT INTO jobs (id, queue, args, max_attempts, run_at)
        SELECT id, queue, args, max_attempts, coalesce(run_at, now()) FROM i
    ), refs AS (
        INSERT INTO job_refs (job_id, queue, dedupe_key, order_id, webhook_event_id, asset_id,
                              email_id, clerk_user_id, max_attempts)
        SELECT id, queue, dedupe_key, order_id, webhook_event_id, asset_id, email_id,
               clerk_user_id, max_attempts
        FROM i
    )
    SELECT count(*) INTO n FROM i;
    IF wake THEN
        PERFORM pg_notify('granary_jobs', q)
        FROM (SELECT DISTINCT e->>'queue' AS q FROM jsonb_array_elements(batch) AS e) d;
    END IF;
    RETURN n;
END
$$;
