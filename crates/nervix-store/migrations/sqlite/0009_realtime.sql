-- SQLite twin of postgres/0009_realtime.sql; keep the two in step.
--
-- The real-time hub (issue #10): a resumable per-agent event stream (agent_events, numbered
-- per agent without gaps by the counter in agent_event_seqs), notifications (each also an
-- event) and announcements (an event for every agent). See the PostgreSQL twin for the why.

CREATE TABLE agent_event_seqs (
    agent_id      BLOB PRIMARY KEY NOT NULL REFERENCES agents (id),
    last_seq      INTEGER NOT NULL CHECK (last_seq >= 0),
    broadcast_id  BLOB
);

CREATE TABLE agent_events (
    agent_id    BLOB NOT NULL REFERENCES agent_event_seqs (agent_id),
    seq         INTEGER NOT NULL CHECK (seq > 0),
    kind        TEXT NOT NULL,
    data        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (agent_id, seq)
) WITHOUT ROWID;
CREATE INDEX agent_events_created_idx ON agent_events (created_at);

CREATE TABLE notifications (
    id          BLOB PRIMARY KEY NOT NULL,
    agent_id    BLOB NOT NULL REFERENCES agents (id),
    kind        TEXT NOT NULL,
    title       TEXT NOT NULL,
    body        TEXT NOT NULL,
    data        TEXT NOT NULL,
    read_at     TEXT,
    created_at  TEXT NOT NULL
);
CREATE INDEX notifications_agent_idx ON notifications (agent_id, id);
CREATE INDEX notifications_unread_idx ON notifications (agent_id, id) WHERE read_at IS NULL;
CREATE INDEX notifications_read_idx ON notifications (read_at) WHERE read_at IS NOT NULL;

CREATE TABLE announcements (
    id          BLOB PRIMARY KEY NOT NULL,
    title       TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_by  BLOB REFERENCES agents (id),
    created_at  TEXT NOT NULL
);
