-- The real-time hub (issue #10): a resumable per-agent event stream, notifications and
-- announcements.
--  * agent_events: every frame sent to an agent (task offers and updates, earnings,
--    reputation updates, notifications, announcements, messages), numbered per agent by `seq`
--    1, 2, 3, … with no gap, so a reconnecting agent asks for everything after the last `seq`
--    it saw. Kept for the retention period (NERVIX_EVENT_RETENTION_DAYS), then pruned.
--  * agent_event_seqs: each agent's last allocated `seq`. An event's transaction advances it
--    with an upsert (`last_seq = last_seq + n … RETURNING last_seq`) and inserts the events
--    with the numbers it got; the counter row's lock makes one agent's events commit in `seq`
--    order. A table of its own, not a column of `agents`, so event writes never wait behind
--    the claims and settlements that lock agent rows (nor the reverse).
--    `broadcast_id` marks the counters a broadcast advanced, so its second statement inserts
--    exactly those agents' events (not those of an agent enrolled in between).
--  * notifications: typed, kept until read (then pruned after the retention period); each is
--    also an event (kind 'notification') written in the same transaction.
--  * announcements: the operator's messages to every agent, each fanned out as an event to
--    every agent in the transaction that stores it.

CREATE TABLE agent_event_seqs (
    agent_id      UUID PRIMARY KEY REFERENCES agents (id),
    last_seq      BIGINT NOT NULL CHECK (last_seq >= 0),
    broadcast_id  UUID
);

CREATE TABLE agent_events (
    agent_id    UUID NOT NULL REFERENCES agent_event_seqs (agent_id),
    seq         BIGINT NOT NULL CHECK (seq > 0),
    kind        TEXT NOT NULL,
    data        JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (agent_id, seq)
);
CREATE INDEX agent_events_created_idx ON agent_events (created_at);

CREATE TABLE notifications (
    id          UUID PRIMARY KEY,
    agent_id    UUID NOT NULL REFERENCES agents (id),
    kind        TEXT NOT NULL,
    title       TEXT NOT NULL,
    body        TEXT NOT NULL,
    data        JSONB NOT NULL,
    read_at     TIMESTAMPTZ,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX notifications_agent_idx ON notifications (agent_id, id);
CREATE INDEX notifications_unread_idx ON notifications (agent_id, id) WHERE read_at IS NULL;
CREATE INDEX notifications_read_idx ON notifications (read_at) WHERE read_at IS NOT NULL;

CREATE TABLE announcements (
    id          UUID PRIMARY KEY,
    title       TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_by  UUID REFERENCES agents (id),
    created_at  TIMESTAMPTZ NOT NULL
);
