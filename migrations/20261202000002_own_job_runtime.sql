-- Granary's own job runtime (design/QUEUE.md, last section): apalis keeps running the workers
-- (Monitor, WorkerBuilder, tower layers), but the jobs live in Granary's own tables, claimed and
-- completed by Granary's own backend. apalis-postgres's tables are retired: every job in them
-- moves here with its state and history, then the `apalis` schema is dropped.

-- One row per job. `state` is what an operator sees, stored as such:
--   pending    waiting to run (new, requeued, rescued or handed back at shutdown);
--   retrying   waiting to run again after a failed attempt (`run_at` is the backoff's);
--   running    claimed by `locked_by`, attempt number `attempt`;
--   completed  done; pruned after the retention;
--   failed     out of attempts, or failed permanently: waits for an operator;
--   cancelled  cancelled by an operator.
CREATE TABLE jobs (
    id            text PRIMARY KEY,
    queue         text NOT NULL,
    args          jsonb NOT NULL,
    state         text NOT NULL DEFAULT 'pending',
    -- The number of the latest attempt (0: never started). A claim adds one.
    attempt       integer NOT NULL DEFAULT 0,
    max_attempts  integer NOT NULL,
    priority      integer NOT NULL DEFAULT 0,
    run_at        timestamptz NOT NULL DEFAULT now(),
    locked_by     text,
    locked_at     timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    -- The latest attempt's error, whole chain (the history is in job_attempts).
    last_error    text,
    CONSTRAINT jobs_state_check CHECK (state IN (
        'pending', 'retrying', 'running', 'completed', 'failed', 'cancelled')),
    CONSTRAINT jobs_attempt_check CHECK (attempt >= 0 AND max_attempts >= 0),
    -- A job has a worker exactly while it runs: the completer's guard relies on it.
    CONSTRAINT jobs_lock_check CHECK ((state = 'running') = (locked_by IS NOT NULL))
) WITH (fillfactor = 85);

-- Only the indexes the claim, the rescue and the operator need: every index is written on every
-- state change (a state change is never a HOT update).
CREATE INDEX jobs_claim_idx ON jobs (queue, priority DESC, run_at, id)
    WHERE state IN ('pending', 'retrying');
CREATE INDEX jobs_running_idx ON jobs (locked_by) WHERE state = 'running';
CREATE INDEX jobs_failed_idx ON jobs (queue, finished_at) WHERE state IN ('failed', 'cancelled');

-- The queue workers alive, one row per queue per process, kept fresh by a heartbeat. A running
-- job whose worker has not been seen within the rescue bound is rescued.
CREATE TABLE job_workers (
    id          text PRIMARY KEY,
    queue       text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now()
);

-- Attempts are found by (job_id, attempt): the claim writes them, the completer and the rescue
-- close them through the job's own row. The index of open attempts per worker is not needed.
DROP INDEX job_attempts_running_idx;
ALTER TABLE job_attempts SET (fillfactor = 85);

-- Move apalis-postgres's jobs across, if this database had them.
DO $$
BEGIN
    IF to_regclass('apalis.jobs') IS NULL THEN
        RETURN;
    END IF;

    -- A job apalis thought was running belonged to a worker of the old runtime, now stopped:
    -- it waits to run again, and its open attempt is closed as abandoned.
    EXECUTE $sql$
        INSERT INTO jobs (id, queue, args, state, attempt, max_attempts, priority, run_at,
                          created_at, finished_at, last_error)
        SELECT j.id, j.job_type,
               coalesce(convert_from(j.job, 'UTF8')::jsonb, 'null'::jsonb),
               CASE
                   WHEN j.status = 'Done' THEN 'completed'
                   WHEN j.status = 'Killed' THEN 'cancelled'
                   WHEN j.status = 'Failed' AND j.attempts >= j.max_attempts THEN 'failed'
                   WHEN j.status = 'Failed' THEN 'retrying'
                   ELSE 'pending'
               END,
               greatest(j.attempts, coalesce(h.attempt, 0)),
               greatest(j.max_attempts, 0),
               coalesce(j.priority, 0),
               CASE WHEN j.status IN ('Queued', 'Running') THEN now() ELSE j.run_at END,
               coalesce(r.created_at, j.run_at),
               CASE WHEN j.status IN ('Done', 'Killed')
                         OR (j.status = 'Failed' AND j.attempts >= j.max_attempts)
                    THEN coalesce(j.done_at, now()) END,
               coalesce(j.last_result ->> 'Err', h.error)
        FROM apalis.jobs j
        LEFT JOIN job_refs r ON r.job_id = j.id
        LEFT JOIN LATERAL (
            SELECT a.attempt, a.error FROM job_attempts a
            WHERE a.job_id = j.id ORDER BY a.attempt DESC LIMIT 1
        ) h ON true
    $sql$;

    UPDATE job_attempts
    SET outcome = 'abandoned', finished_at = clock_timestamp(),
        error = 'the worker stopped (the job runtime was upgraded) before this attempt finished'
    WHERE outcome = 'running';

    DROP SCHEMA apalis CASCADE;
END
$$;

-- Attempts and links of jobs that no longer exist (pruned before this upgrade) are removed.
-- No foreign keys to `jobs`: their checks would cost a lookup and a row lock per claim; the
-- runtime's retention deletes a job's attempts and links with it.
DELETE FROM job_attempts a WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = a.job_id);
DELETE FROM job_refs r WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = r.job_id);
