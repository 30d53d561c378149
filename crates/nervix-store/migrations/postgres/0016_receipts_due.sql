-- Receipts issued from the reputation pass (issue #9's throughput, #13's receipts).
--
-- An accepted submission's receipt states the reputation the work led to. Computing that
-- needs the agent's evidence; doing it on every acceptance, on the request path, read the
-- same evidence the reputation pass reads a moment later, and cost a write of its own. Now
-- the acceptance only records that a receipt is due, in its own transaction (a trigger, like
-- the evidence version, so every path that accepts work does it: the submit, a reviewer's
-- decision, the review deadline), and the reputation pass issues the due receipts of each
-- agent it scores from the evidence it read anyway, many in one write. A receipt is never
-- lost to a crash between the acceptance and its signing: the due row survives it.
--
-- Work accepted before this migration is not made due: its receipts were issued when it was
-- accepted (migration 0014), or it predates receipts.
CREATE TABLE receipts_due (
    submission_id  UUID PRIMARY KEY REFERENCES submissions (id),
    agent_id       UUID NOT NULL REFERENCES agents (id)
);
CREATE INDEX receipts_due_agent_idx ON receipts_due (agent_id);

CREATE FUNCTION receipt_due() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'accepted' AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM 'accepted') THEN
        INSERT INTO receipts_due (submission_id, agent_id) VALUES (NEW.id, NEW.agent_id)
            ON CONFLICT (submission_id) DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER submissions_receipt_due AFTER INSERT OR UPDATE OF status ON submissions
    FOR EACH ROW EXECUTE FUNCTION receipt_due();
