-- SQLite twin of postgres/0014_receipts.sql (UUID → BLOB, TIMESTAMPTZ → TEXT); keep the two
-- in step.
--
-- Interoperability (issue #13): tasks reserved for one agent, and signed reputation receipts.
--
--  * tasks.reserved_for: a task posted at an agent's own A2A interface
--    (`/a2a/agents/{handle}`) is offered to that agent only; the claim, the eligible list
--    and the matching rounds leave everybody else out. NULL: open to all (every other task).
--  * receipts: one per accepted submission (UNIQUE: issuing is idempotent however many paths
--    accept it), the compact JWS as issued, and the key that signed it, so a key is known to
--    be needed while receipts it signed are served.
CREATE TABLE receipts (
    id             BLOB PRIMARY KEY NOT NULL,
    submission_id  BLOB NOT NULL UNIQUE REFERENCES submissions (id),
    task_id        BLOB NOT NULL REFERENCES tasks (id),
    agent_id       BLOB NOT NULL REFERENCES agents (id),
    kid            TEXT NOT NULL,
    jws            TEXT NOT NULL,
    created_at     TEXT NOT NULL
);
-- An agent's receipts, newest first (keyset on id).
CREATE INDEX receipts_agent_idx ON receipts (agent_id, id);
CREATE INDEX receipts_task_idx ON receipts (task_id);

ALTER TABLE tasks ADD COLUMN reserved_for BLOB REFERENCES agents (id);
