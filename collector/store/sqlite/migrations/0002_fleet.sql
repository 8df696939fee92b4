-- Fleet queries: the latest packages, ports and findings of every node,
-- their change history, and searchable event columns.

-- The node's own message (with its posture), so listing nodes does not
-- decode whole snapshots.
ALTER TABLE nodes ADD COLUMN node_info BLOB;

CREATE TABLE packages (
    node          TEXT    NOT NULL,
    pkey          TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    first_seen_ns INTEGER NOT NULL,
    body          BLOB    NOT NULL,
    PRIMARY KEY (node, pkey)
) WITHOUT ROWID;
CREATE INDEX packages_name ON packages (name, node, pkey);

CREATE TABLE ports (
    node          TEXT    NOT NULL,
    pkey          TEXT    NOT NULL,
    port          INTEGER NOT NULL,
    protocol      INTEGER NOT NULL,
    exposure      INTEGER NOT NULL,
    first_seen_ns INTEGER NOT NULL,
    body          BLOB    NOT NULL,
    PRIMARY KEY (node, pkey)
) WITHOUT ROWID;
CREATE INDEX ports_port ON ports (port, node, pkey);

CREATE TABLE findings (
    node     TEXT    NOT NULL,
    check_id TEXT    NOT NULL,
    severity INTEGER NOT NULL,
    status   INTEGER NOT NULL,
    body     BLOB    NOT NULL,
    PRIMARY KEY (node, check_id)
) WITHOUT ROWID;
CREATE INDEX findings_check ON findings (check_id, node);

CREATE TABLE changes (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    node    TEXT    NOT NULL,
    time_ns INTEGER NOT NULL,
    kind    INTEGER NOT NULL,
    subject TEXT    NOT NULL,
    body    BLOB    NOT NULL
);
CREATE INDEX changes_time ON changes (time_ns);
CREATE INDEX changes_node_time ON changes (node, time_ns);

CREATE INDEX sequences_received ON sequences (received_ns);

-- Events gain a row id (the search cursor) and searchable columns; the
-- (node, seq, idx) key goes: the sequences table already dedupes batches.
CREATE TABLE events_v2 (
    id          INTEGER PRIMARY KEY,
    node        TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    idx         INTEGER NOT NULL,
    time_ns     INTEGER NOT NULL,
    received_ns INTEGER NOT NULL,
    kind        TEXT    NOT NULL,
    bin         TEXT    NOT NULL DEFAULT '',
    uid         INTEGER,
    usr         TEXT    NOT NULL DEFAULT '',
    pod         TEXT    NOT NULL DEFAULT '',
    pod_ns      TEXT    NOT NULL DEFAULT '',
    container   TEXT    NOT NULL DEFAULT '',
    session     TEXT    NOT NULL DEFAULT '',
    body        BLOB    NOT NULL
);
INSERT INTO events_v2 (node, seq, idx, time_ns, received_ns, kind, body)
    SELECT node, seq, idx, time_ns, 0, kind, body FROM events ORDER BY time_ns;
DROP TABLE events;
ALTER TABLE events_v2 RENAME TO events;
CREATE INDEX events_time ON events (time_ns);
CREATE INDEX events_node_time ON events (node, time_ns);
CREATE INDEX events_bin_time ON events (bin, time_ns);
