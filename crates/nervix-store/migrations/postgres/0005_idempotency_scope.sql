-- PostgreSQL twin of sqlite/0005_idempotency_scope.sql; keep the two in step.
--
-- An Idempotency-Key is scoped by agent, HTTP method and path, and its response is stored in
-- the transaction of the work it answers: the key is claimed (inserted) first, the response
-- written before the commit. A concurrent request with the same key waits on the uncommitted
-- insert and then finds the key used. No reservation outlives its transaction, so a committed
-- row always holds a response (status > 0). Stored responses are short-lived (housekeeping
-- drops them after a day): the old table is dropped, not converted.

DROP TABLE idempotency_keys;

CREATE TABLE idempotency_keys (
    agent_id      UUID NOT NULL,
    method        TEXT NOT NULL,
    path          TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    status        BIGINT NOT NULL,
    body          TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (agent_id, method, path, key)
);

CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
