-- Finished jobs leave the table the runtime writes. `jobs` becomes a table partitioned by state:
--   jobs_active    pending, retrying, running: what the claim, the completer and the rescue touch;
--   jobs_finished  completed, failed, cancelled: the history the console reads and retention
--                  prunes.
-- Measured (docs/performance.md, "Cost against history"): with 5M finished jobs in the one table
-- the runtime ran 0.74× of its empty-table throughput; with the same 5M rows moved to another
-- table, 1.01×. Every job the claim updates and the completer finishes was looked up and
-- re-indexed in B-trees and a heap that held the whole history.
--
-- Readers keep reading `jobs` (all states; a predicate on `state` reads one partition only).
-- Writers that change a job's partition delete it from one and insert it into the other, in one
-- statement, never by updating `state` across the bound: PostgreSQL moves a row between
-- partitions on such an update, but a concurrent statement waiting to lock that row then fails
-- with a serialization error, where a deleted row is simply skipped (docs/queue.md).
--
-- A partitioned table's primary key must hold the partition key, so the id is unique per
-- partition (each has its own primary key on `id`); ids are ULIDs made by the runtime, and a
-- job is in exactly one partition because every move is one statement.

-- The same columns, defaults and checks as `jobs` (not its keys and indexes, made below).
CREATE TABLE jobs_split (LIKE jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY LIST (state);
-- A finished job has its finish time; a waiting or running one has none.
ALTER TABLE jobs_split ADD CONSTRAINT jobs_finished_at_check CHECK (
    (state IN ('completed', 'failed', 'cancelled')) = (finished_at IS NOT NULL));

CREATE TABLE jobs_active PARTITION OF jobs_split
    FOR VALUES IN ('pending', 'retrying', 'running') WITH (fillfactor = 85);
CREATE TABLE jobs_finished PARTITION OF jobs_split
    FOR VALUES IN ('completed', 'failed', 'cancelled');

INSERT INTO jobs_split
SELECT id, queue, args, state, attempt, max_attempts, priority, run_at, locked_by, locked_at,
       created_at,
       CASE WHEN state IN ('completed', 'failed', 'cancelled')
            THEN coalesce(finished_at, now()) END,
       last_error
FROM jobs;

DROP TABLE jobs;
ALTER TABLE jobs_split RENAME TO jobs;

ALTER TABLE jobs_active ADD CONSTRAINT jobs_active_pkey PRIMARY KEY (id);
ALTER TABLE jobs_finished ADD CONSTRAINT jobs_finished_pkey PRIMARY KEY (id);

-- The indexes, each on the partition whose rows it serves (the names are the old table's).
CREATE INDEX jobs_claim_idx ON jobs_active (queue, priority DESC, run_at, id)
    WHERE state IN ('pending', 'retrying');
CREATE INDEX jobs_running_idx ON jobs_active (locked_by) WHERE state = 'running';
CREATE INDEX jobs_failed_idx ON jobs_finished (queue, finished_at)
    WHERE state IN ('failed', 'cancelled');
-- The console's search over the jobs an operator looks for (failed, cancelled, retrying), on
-- the parent, so each partition's index has the predicate the console's query states (the
-- planner proves a partial index usable from the query's own conditions, not from the
-- partition's bound).
CREATE INDEX jobs_search_idx ON jobs
    USING gin ((args::text || ' ' || coalesce(last_error, '')) gin_trgm_ops)
    WHERE state IN ('failed', 'cancelled', 'retrying');
-- Retention deletes completed jobs by id range (ids are ULIDs, so creation order): the
-- finished partition's primary key serves it.

ANALYZE jobs;
