-- The database, not the code, now keeps these invariants (each section below says more):
--  * an account's cached `balance` is the sum of its entries: inserting an entry applies it;
--  * no account but the treasury goes below zero (CHECK; the store maps the constraint name
--    'ledger_accounts_no_overdraft' to "insufficient funds");
--  * ledger entries are append-only: UPDATE and DELETE are refused;
--  * the capability index tables follow the JSON `capabilities` column they index, so an
--    agent or task is written with one statement;
--  * `agents.active_tasks` counts the agent's claimed tasks, and a claim beyond
--    `max_concurrent_tasks` is refused ('agents_at_capacity').
-- It also gives each task row its (immutable) dependency list.
--
-- Entries of one posting are inserted in account-id order, so the row locks this trigger takes
-- on the accounts are always taken in one global order (no deadlocks between postings).

CREATE FUNCTION ledger_entries_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE ledger_accounts SET balance = balance + NEW.amount WHERE id = NEW.account_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER ledger_entries_apply AFTER INSERT ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_apply();

ALTER TABLE ledger_accounts ADD CONSTRAINT ledger_accounts_no_overdraft
    CHECK (balance >= 0 OR kind = 'treasury');

CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries_append_only';
END
$$;

CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only();

CREATE FUNCTION agents_capabilities_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        DELETE FROM agent_capabilities WHERE agent_id = NEW.id;
    END IF;
    INSERT INTO agent_capabilities (agent_id, capability)
        SELECT DISTINCT NEW.id, c FROM jsonb_array_elements_text(NEW.capabilities) AS c;
    RETURN NULL;
END
$$;

CREATE TRIGGER agents_capabilities_insert AFTER INSERT ON agents
    FOR EACH ROW EXECUTE FUNCTION agents_capabilities_sync();
CREATE TRIGGER agents_capabilities_update AFTER UPDATE OF capabilities ON agents
    FOR EACH ROW EXECUTE FUNCTION agents_capabilities_sync();

CREATE FUNCTION tasks_capabilities_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_capabilities (task_id, capability)
        SELECT DISTINCT NEW.id, c FROM jsonb_array_elements_text(NEW.capabilities) AS c;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_capabilities_insert AFTER INSERT ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_capabilities_sync();

-- A task's dependencies never change after posting: the row carries them for rendering, and
-- `task_dependencies` stays the index the unblock query walks.
ALTER TABLE tasks ADD COLUMN depends_on JSONB NOT NULL DEFAULT '[]';
UPDATE tasks t SET depends_on = d.ids
    FROM (SELECT task_id, jsonb_agg(depends_on::text ORDER BY depends_on) AS ids
          FROM task_dependencies GROUP BY task_id) d
    WHERE d.task_id = t.id;

-- How many tasks each agent holds ('claimed'), kept by the database so that a claim is one
-- statement: a task entering 'claimed' is refused ('agents_at_capacity') when its assignee
-- already holds max_concurrent_tasks, atomically with the claim itself. The conditional
-- increment waits for the agent's row lock and re-checks the row it then sees, so concurrent
-- claims of one agent cannot both pass.
ALTER TABLE agents ADD COLUMN active_tasks BIGINT NOT NULL DEFAULT 0;
UPDATE agents a SET active_tasks =
    (SELECT COUNT(*) FROM tasks t WHERE t.assigned_agent_id = a.id AND t.status = 'claimed');

CREATE FUNCTION tasks_active_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'claimed'
        AND (NEW.status <> 'claimed' OR NEW.assigned_agent_id IS DISTINCT FROM OLD.assigned_agent_id) THEN
        UPDATE agents SET active_tasks = active_tasks - 1 WHERE id = OLD.assigned_agent_id;
    END IF;
    IF NEW.status = 'claimed'
        AND (OLD.status <> 'claimed' OR NEW.assigned_agent_id IS DISTINCT FROM OLD.assigned_agent_id) THEN
        UPDATE agents SET active_tasks = active_tasks + 1
            WHERE id = NEW.assigned_agent_id AND active_tasks < max_concurrent_tasks;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'agents_at_capacity'
                USING ERRCODE = 'check_violation', CONSTRAINT = 'agents_at_capacity';
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_active_count AFTER UPDATE OF status, assigned_agent_id ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_active_count();
