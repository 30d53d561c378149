-- The economy (issue #9):
--  * withdrawals: a request moves money from the agent's `available` account to its
--    `pending_withdrawal` account; an admin's decision pays it out (to the platform's
--    `withdrawn` account: the money has left the platform) or releases it back, exactly once
--    (a conditional update on `status`);
--  * task_exclusions: who may not claim a task again, and why ('released', 'lease_lost',
--    'rejected'), written in the transaction that took the task from the agent and read by
--    the claim's conditional write. Reputation reads it as evidence (counts per agent).
-- The new account kinds ('bonus_pool', 'pending_withdrawal', 'withdrawn') need no schema:
-- like every account but the treasury they may never go below zero (migration 0003).

CREATE TABLE withdrawals (
    id            UUID PRIMARY KEY,
    agent_id      UUID NOT NULL REFERENCES agents (id),
    amount_cents  BIGINT NOT NULL CHECK (amount_cents > 0),
    destination   TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'paid', 'rejected')),
    created_at    TIMESTAMPTZ NOT NULL,
    decided_at    TIMESTAMPTZ,
    decided_by    UUID
);
CREATE INDEX withdrawals_agent_idx ON withdrawals (agent_id, id);
CREATE INDEX withdrawals_status_idx ON withdrawals (status, id);

CREATE TABLE task_exclusions (
    task_id     UUID NOT NULL REFERENCES tasks (id),
    agent_id    UUID NOT NULL REFERENCES agents (id),
    reason      TEXT NOT NULL CHECK (reason IN ('released', 'lease_lost', 'rejected')),
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (task_id, agent_id, reason)
);
CREATE INDEX task_exclusions_agent_idx ON task_exclusions (agent_id, reason);
