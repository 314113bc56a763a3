-- A paid digital product whose file the seller has not uploaded yet gets a placeholder grant
-- (asset_id NULL): the buyer's downloads list it as "file coming" with a reason, it can never be
-- downloaded, and it becomes the real grant (same id and token) when the seller's asset is
-- finalized. One placeholder per order item.
ALTER TABLE download_grants ALTER COLUMN asset_id DROP NOT NULL;
CREATE UNIQUE INDEX download_grants_placeholder_key ON download_grants (order_item_id)
    WHERE asset_id IS NULL;
-- A placeholder carries no expiry: the clock starts when the file is there.
ALTER TABLE download_grants ADD CONSTRAINT download_grants_placeholder_check
    CHECK (asset_id IS NOT NULL OR (expires_at IS NULL AND download_count = 0));
