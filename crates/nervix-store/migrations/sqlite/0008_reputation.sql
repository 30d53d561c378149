-- SQLite twin of postgres/0008_reputation.sql; keep the two in step.
--
-- Peer reviews, spot-check holds, and reputation that follows its evidence:
--  * every write that is reputation evidence for an agent (a submission decided or held, a
--    review of its work, a task it released or lost) bumps `agents.reputation_version` in the
--    same transaction (triggers below), and a worker recomputes agents whose
--    `reputation_computed` lags behind; the worker's write is conditional on the version it
--    read, so no evidence is ever left out of a score;
--  * the level caps how many tasks an agent holds at once: `level_max_tasks` is written with
--    the score, and the claim's capacity check takes the smaller of it and the agent's own
--    `max_concurrent_tasks`.

ALTER TABLE agents ADD COLUMN reputation_version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE agents ADD COLUMN reputation_computed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN level_max_tasks INTEGER NOT NULL DEFAULT 2;
CREATE INDEX agents_reputation_stale_idx ON agents (id) WHERE reputation_version > reputation_computed;

-- Spot checks: a held submission waits for a reviewer until `review_deadline`, then is
-- accepted on its automated score. `final_score` is what it was paid on (a reviewer's score
-- when a review decided it).
ALTER TABLE submissions ADD COLUMN review_deadline TEXT;
ALTER TABLE submissions ADD COLUMN final_score INTEGER;
CREATE INDEX submissions_pending_idx ON submissions (review_deadline, id) WHERE status = 'pending_review';
CREATE INDEX submissions_status_idx ON submissions (agent_id, status, created_at);

CREATE TABLE reviews (
    id             BLOB PRIMARY KEY NOT NULL,
    submission_id  BLOB NOT NULL REFERENCES submissions (id),
    reviewer_id    BLOB NOT NULL REFERENCES agents (id),
    -- Whose work is reviewed: the submission's agent, copied so evidence reads one table.
    subject_id     BLOB NOT NULL REFERENCES agents (id),
    score          INTEGER NOT NULL CHECK (score BETWEEN 0 AND 100),
    feedback       TEXT NOT NULL,
    -- Whether this review decided a held submission ('accepted' or 'rejected'), or only
    -- counts as peer evidence (NULL).
    decision       TEXT,
    created_at     TEXT NOT NULL,
    CONSTRAINT reviews_one_per_reviewer UNIQUE (submission_id, reviewer_id),
    CONSTRAINT reviews_not_own CHECK (reviewer_id <> subject_id)
);
CREATE INDEX reviews_subject_idx ON reviews (subject_id, created_at);
CREATE INDEX reviews_reviewer_idx ON reviews (reviewer_id, subject_id);

CREATE TABLE reputation_snapshots (
    id         BLOB PRIMARY KEY NOT NULL,
    agent_id   BLOB NOT NULL REFERENCES agents (id),
    at         TEXT NOT NULL,
    score      INTEGER NOT NULL,
    automated  INTEGER NOT NULL,
    success    INTEGER NOT NULL,
    peer       INTEGER NOT NULL,
    level      TEXT NOT NULL
);
CREATE INDEX reputation_snapshots_agent_idx ON reputation_snapshots (agent_id, id);

CREATE TRIGGER submissions_reputation_insert AFTER INSERT ON submissions
BEGIN
    UPDATE agents SET reputation_version = reputation_version + 1 WHERE id = NEW.agent_id;
END;

CREATE TRIGGER submissions_reputation_decided AFTER UPDATE OF status ON submissions
WHEN OLD.status IS NOT NEW.status
BEGIN
    UPDATE agents SET reputation_version = reputation_version + 1 WHERE id = NEW.agent_id;
END;

CREATE TRIGGER reviews_reputation AFTER INSERT ON reviews
BEGIN
    UPDATE agents SET reputation_version = reputation_version + 1 WHERE id = NEW.subject_id;
END;

CREATE TRIGGER task_exclusions_reputation AFTER INSERT ON task_exclusions
BEGIN
    UPDATE agents SET reputation_version = reputation_version + 1 WHERE id = NEW.agent_id;
END;

DROP TRIGGER tasks_claim_capacity;
CREATE TRIGGER tasks_claim_capacity BEFORE UPDATE OF status, assigned_agent_id ON tasks
WHEN NEW.status = 'claimed'
    AND (OLD.status <> 'claimed' OR OLD.assigned_agent_id IS NOT NEW.assigned_agent_id)
BEGIN
    SELECT RAISE(ABORT, 'agents_at_capacity')
    WHERE (SELECT active_tasks >= MIN(max_concurrent_tasks, level_max_tasks)
           FROM agents WHERE id = NEW.assigned_agent_id);
END;
