-- SQLite twin of postgres/0016_receipts_due.sql (UUID → BLOB); keep the two in step.
--
-- Receipts issued from the reputation pass: an acceptance records, in its own transaction,
-- that a receipt is due; the reputation pass issues it from the evidence it reads anyway.
-- See the PostgreSQL file for the reasons.
CREATE TABLE receipts_due (
    submission_id  BLOB PRIMARY KEY NOT NULL REFERENCES submissions (id),
    agent_id       BLOB NOT NULL REFERENCES agents (id)
);
CREATE INDEX receipts_due_agent_idx ON receipts_due (agent_id);

CREATE TRIGGER submissions_receipt_due_insert AFTER INSERT ON submissions
WHEN NEW.status = 'accepted'
BEGIN
    INSERT INTO receipts_due (submission_id, agent_id) VALUES (NEW.id, NEW.agent_id)
        ON CONFLICT (submission_id) DO NOTHING;
END;

CREATE TRIGGER submissions_receipt_due_decided AFTER UPDATE OF status ON submissions
WHEN NEW.status = 'accepted' AND OLD.status IS NOT 'accepted'
BEGIN
    INSERT INTO receipts_due (submission_id, agent_id) VALUES (NEW.id, NEW.agent_id)
        ON CONFLICT (submission_id) DO NOTHING;
END;
