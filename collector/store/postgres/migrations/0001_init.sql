-- Nodes, their latest snapshot and node message, and every stored sequence.
CREATE TABLE nodes (
    name          TEXT PRIMARY KEY,
    last_seen_ns  BIGINT NOT NULL DEFAULT 0,
    last_sequence BIGINT NOT NULL DEFAULT 0,
    connected     BIGINT NOT NULL DEFAULT 0,
    snapshot_seq  BIGINT,
    snapshot      BYTEA,
    node_info     BYTEA
);

-- One row per stored (node, sequence): the dedupe key for replays.
CREATE TABLE sequences (
    node        TEXT   NOT NULL,
    seq         BIGINT NOT NULL,
    kind        TEXT   NOT NULL,
    received_ns BIGINT NOT NULL,
    PRIMARY KEY (node, seq)
);
CREATE INDEX sequences_received ON sequences (received_ns);

CREATE TABLE snapshots (
    node        TEXT   NOT NULL,
    seq         BIGINT NOT NULL,
    received_ns BIGINT NOT NULL,
    snapshot    BYTEA  NOT NULL,
    PRIMARY KEY (node, seq)
);
CREATE INDEX snapshots_received ON snapshots (received_ns);

CREATE TABLE packages (
    node          TEXT   NOT NULL,
    pkey          TEXT   NOT NULL,
    name          TEXT   NOT NULL,
    first_seen_ns BIGINT NOT NULL,
    body          BYTEA  NOT NULL,
    PRIMARY KEY (node, pkey)
);
CREATE INDEX packages_name ON packages (name, node, pkey);

CREATE TABLE ports (
    node          TEXT   NOT NULL,
    pkey          TEXT   NOT NULL,
    port          BIGINT NOT NULL,
    protocol      BIGINT NOT NULL,
    exposure      BIGINT NOT NULL,
    first_seen_ns BIGINT NOT NULL,
    body          BYTEA  NOT NULL,
    PRIMARY KEY (node, pkey)
);
CREATE INDEX ports_port ON ports (port, node, pkey);

CREATE TABLE findings (
    node     TEXT   NOT NULL,
    check_id TEXT   NOT NULL,
    severity BIGINT NOT NULL,
    status   BIGINT NOT NULL,
    body     BYTEA  NOT NULL,
    PRIMARY KEY (node, check_id)
);
CREATE INDEX findings_check ON findings (check_id, node);

CREATE TABLE changes (
    id      BIGSERIAL PRIMARY KEY,
    node    TEXT   NOT NULL,
    time_ns BIGINT NOT NULL,
    kind    BIGINT NOT NULL,
    subject TEXT   NOT NULL,
    body    BYTEA  NOT NULL
);
CREATE INDEX changes_time ON changes (time_ns, id);
CREATE INDEX changes_node_time ON changes (node, time_ns, id);

CREATE TABLE events (
    id          BIGSERIAL PRIMARY KEY,
    node        TEXT   NOT NULL,
    seq         BIGINT NOT NULL,
    idx         BIGINT NOT NULL,
    time_ns     BIGINT NOT NULL,
    received_ns BIGINT NOT NULL,
    kind        TEXT   NOT NULL,
    bin         TEXT   NOT NULL DEFAULT '',
    uid         BIGINT,
    usr         TEXT   NOT NULL DEFAULT '',
    pod         TEXT   NOT NULL DEFAULT '',
    pod_ns      TEXT   NOT NULL DEFAULT '',
    container   TEXT   NOT NULL DEFAULT '',
    session     TEXT   NOT NULL DEFAULT '',
    body        BYTEA  NOT NULL
);
CREATE INDEX events_time ON events (time_ns, id);
CREATE INDEX events_node_time ON events (node, time_ns, id);
CREATE INDEX events_bin_time ON events (bin, time_ns, id);
CREATE INDEX events_node_seq ON events (node, seq);
