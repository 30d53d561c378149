-- Peer reviews, spot-check holds, and reputation that follows its evidence:
--  * every write that is reputation evidence for an agent (a submission decided or held, a
--    review of its work, a task it released or lost) bumps `agents.reputation_version` in the
--    same transaction (triggers below), and a worker recomputes agents whose
--    `reputation_computed` lags behind; the worker's write is conditional on the version it
--    read, so no evidence is ever left out of a score;
--  * the level caps how many tasks an agent holds at once: `level_max_tasks` is written with
--    the score, and the claim's capacity check takes the smaller of it and the agent's own
--    `max_concurrent_tasks`.

ALTER TABLE agents ADD COLUMN reputation_version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE agents ADD COLUMN reputation_computed BIGINT NOT NULL DEFAULT 0;
ALTER TABLE agents ADD COLUMN level_max_tasks BIGINT NOT NULL DEFAULT 2;
CREATE INDEX agents_reputation_stale_idx ON agents (id) WHERE reputation_version > reputation_computed;

-- Spot checks: a held submission waits for a reviewer until `review_deadline`, then is
-- accepted on its automated score. `final_score` is what it was paid on (a reviewer's score
-- when a review decided it).
ALTER TABLE submissions ADD COLUMN review_deadline TIMESTAMPTZ;
ALTER TABLE submissions ADD COLUMN final_score BIGINT;
CREATE INDEX submissions_pending_idx ON submissions (review_deadline, id) WHERE status = 'pending_review';
CREATE INDEX submissions_status_idx ON submissions (agent_id, status, created_at);

CREATE TABLE reviews (
    id             UUID PRIMARY KEY,
    submission_id  UUID NOT NULL REFERENCES submissions (id),
    reviewer_id    UUID NOT NULL REFERENCES agents (id),
    -- Whose work is reviewed: the submission's agent, copied so evidence reads one table.
    subject_id     UUID NOT NULL REFERENCES agents (id),
    score          BIGINT NOT NULL CHECK (score BETWEEN 0 AND 100),
    feedback       TEXT NOT NULL,
    -- Whether this review decided a held submission ('accepted' or 'rejected'), or only
    -- counts as peer evidence (NULL).
    decision       TEXT,
    created_at     TIMESTAMPTZ NOT NULL,
    CONSTRAINT reviews_one_per_reviewer UNIQUE (submission_id, reviewer_id),
    CONSTRAINT reviews_not_own CHECK (reviewer_id <> subject_id)
);
CREATE INDEX reviews_subject_idx ON reviews (subject_id, created_at);
CREATE INDEX reviews_reviewer_idx ON reviews (reviewer_id, subject_id);

CREATE TABLE reputation_snapshots (
    id         UUID PRIMARY KEY,
    agent_id   UUID NOT NULL REFERENCES agents (id),
    at         TIMESTAMPTZ NOT NULL,
    score      BIGINT NOT NULL,
    automated  BIGINT NOT NULL,
    success    BIGINT NOT NULL,
    peer       BIGINT NOT NULL,
    level      TEXT NOT NULL
);
CREATE INDEX reputation_snapshots_agent_idx ON reputation_snapshots (agent_id, id);

CREATE FUNCTION reputation_evidence() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'reviews' THEN
        UPDATE agents SET reputation_version = reputation_version + 1 WHERE id = NEW.subject_id;
    ELSIF TG_TABLE_NAME = 'task_exclusions' THEN
        UPDATE agents SET reputation_version = reputation_version + 1 WHERE id = NEW.agent_id;
    ELSIF TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM NEW.status THEN
        UPDATE agents SET reputation_version = reputation_version + 1 WHERE id = NEW.agent_id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER submissions_reputation AFTER INSERT OR UPDATE OF status ON submissions
    FOR EACH ROW EXECUTE FUNCTION reputation_evidence();
CREATE TRIGGER reviews_reputation AFTER INSERT ON reviews
    FOR EACH ROW EXECUTE FUNCTION reputation_evidence();
CREATE TRIGGER task_exclusions_reputation AFTER INSERT ON task_exclusions
    FOR EACH ROW EXECUTE FUNCTION reputation_evidence();

CREATE OR REPLACE FUNCTION tasks_active_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'claimed'
        AND (NEW.status <> 'claimed' OR NEW.assigned_agent_id IS DISTINCT FROM OLD.assigned_agent_id) THEN
        UPDATE agents SET active_tasks = active_tasks - 1 WHERE id = OLD.assigned_agent_id;
    END IF;
    IF NEW.status = 'claimed'
        AND (OLD.status <> 'claimed' OR NEW.assigned_agent_id IS DISTINCT FROM OLD.assigned_agent_id) THEN
        UPDATE agents SET active_tasks = active_tasks + 1
            WHERE id = NEW.assigned_agent_id
              AND active_tasks < LEAST(max_concurrent_tasks, level_max_tasks);
        IF NOT FOUND THEN
            RAISE EXCEPTION 'agents_at_capacity'
                USING ERRCODE = 'check_violation', CONSTRAINT = 'agents_at_capacity';
        END IF;
    END IF;
    RETURN NULL;
END
$$;
