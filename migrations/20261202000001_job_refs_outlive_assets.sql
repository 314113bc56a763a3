-- A product that was never sold is deleted for good, its assets with it; the finalize_asset
-- job that once ran for such an asset keeps its history (job, attempts, errors) and loses only
-- the link. Before, the link's foreign key refused the delete, and the seller got a 500
-- (found by schemathesis).
ALTER TABLE job_refs DROP CONSTRAINT job_refs_asset_id_fkey;
ALTER TABLE job_refs ADD CONSTRAINT job_refs_asset_id_fkey
    FOREIGN KEY (asset_id) REFERENCES digital_assets (id) ON DELETE SET NULL;
