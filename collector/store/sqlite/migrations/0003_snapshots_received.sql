-- Retention deletes snapshot history by age.
CREATE INDEX snapshots_received ON snapshots (received_ns);
