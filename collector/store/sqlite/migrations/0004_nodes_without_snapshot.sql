-- The latest snapshot is read from the snapshot history (nodes.snapshot_seq
-- names it), so the nodes row stays small: every commit group updates it,
-- and SQLite rewrites a whole row, blob and all, on each update.
ALTER TABLE nodes DROP COLUMN snapshot;
