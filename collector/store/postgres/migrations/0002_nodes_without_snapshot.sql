-- The latest snapshot is read from the snapshot history (nodes.snapshot_seq
-- names it): one copy of it, and a small nodes row that every commit group
-- updates.
ALTER TABLE nodes DROP COLUMN snapshot;
