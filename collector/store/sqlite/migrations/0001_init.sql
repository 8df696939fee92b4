-- Nodes, their latest snapshot, and every stored sequence number.
CREATE TABLE nodes (
    name          TEXT PRIMARY KEY,
    last_seen_ns  INTEGER NOT NULL DEFAULT 0,
    last_sequence INTEGER NOT NULL DEFAULT 0,
    connected     INTEGER NOT NULL DEFAULT 0,
    snapshot_seq  INTEGER,
    snapshot      BLOB
) WITHOUT ROWID;

-- One row per stored (node, sequence): the dedupe key for replays.
CREATE TABLE sequences (
    node        TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    received_ns INTEGER NOT NULL,
    PRIMARY KEY (node, seq)
) WITHOUT ROWID;

-- Snapshot history: each snapshot a node sent, kept for change history.
CREATE TABLE snapshots (
    node        TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    received_ns INTEGER NOT NULL,
    snapshot    BLOB    NOT NULL,
    PRIMARY KEY (node, seq)
) WITHOUT ROWID;

CREATE TABLE events (
    node    TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    idx     INTEGER NOT NULL,
    time_ns INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    body    BLOB    NOT NULL,
    PRIMARY KEY (node, seq, idx)
);
CREATE INDEX events_time ON events (time_ns);
