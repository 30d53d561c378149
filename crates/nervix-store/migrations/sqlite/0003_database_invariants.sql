-- SQLite twin of postgres/0003_database_invariants.sql; keep the two in step.
--
-- The database, not the code, now keeps these invariants (each section below says more):
--  * an account's cached `balance` is the sum of its entries: inserting an entry applies it;
--  * no account but the treasury goes below zero: the update that would is aborted
--    (the store maps 'ledger_accounts_no_overdraft' to "insufficient funds");
--  * ledger entries are append-only: UPDATE and DELETE are refused;
--  * the capability index tables follow the JSON `capabilities` column they index, so an
--    agent or task is written with one statement;
--  * `agents.active_tasks` counts the agent's claimed tasks, and a claim beyond
--    `max_concurrent_tasks` is refused ('agents_at_capacity').
-- It also gives each task row its (immutable) dependency list.

CREATE TRIGGER ledger_entries_apply AFTER INSERT ON ledger_entries
BEGIN
    UPDATE ledger_accounts SET balance = balance + NEW.amount WHERE id = NEW.account_id;
END;

CREATE TRIGGER ledger_accounts_no_overdraft BEFORE UPDATE OF balance ON ledger_accounts
WHEN NEW.balance < 0 AND NEW.kind <> 'treasury'
BEGIN
    SELECT RAISE(ABORT, 'ledger_accounts_no_overdraft');
END;

CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries
BEGIN
    SELECT RAISE(ABORT, 'ledger_entries_append_only');
END;

CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
BEGIN
    SELECT RAISE(ABORT, 'ledger_entries_append_only');
END;

CREATE TRIGGER agents_capabilities_insert AFTER INSERT ON agents
BEGIN
    INSERT INTO agent_capabilities (agent_id, capability)
        SELECT DISTINCT NEW.id, value FROM json_each(NEW.capabilities);
END;

CREATE TRIGGER agents_capabilities_update AFTER UPDATE OF capabilities ON agents
BEGIN
    DELETE FROM agent_capabilities WHERE agent_id = NEW.id;
    INSERT INTO agent_capabilities (agent_id, capability)
        SELECT DISTINCT NEW.id, value FROM json_each(NEW.capabilities);
END;

CREATE TRIGGER tasks_capabilities_insert AFTER INSERT ON tasks
BEGIN
    INSERT INTO task_capabilities (task_id, capability)
        SELECT DISTINCT NEW.id, value FROM json_each(NEW.capabilities);
END;

-- A task's dependencies never change after posting: the row carries them for rendering, and
-- `task_dependencies` stays the index the unblock query walks.
ALTER TABLE tasks ADD COLUMN depends_on TEXT NOT NULL DEFAULT '[]';
UPDATE tasks SET depends_on = (
    SELECT json_group_array(d.depends_on_text) FROM (
        SELECT lower(substr(hex(depends_on), 1, 8) || '-' || substr(hex(depends_on), 9, 4) || '-' ||
               substr(hex(depends_on), 13, 4) || '-' || substr(hex(depends_on), 17, 4) || '-' ||
               substr(hex(depends_on), 21)) AS depends_on_text
        FROM task_dependencies WHERE task_id = tasks.id ORDER BY depends_on
    ) d
) WHERE id IN (SELECT task_id FROM task_dependencies);

-- How many tasks each agent holds ('claimed'), kept by the database so that a claim is one
-- statement: a task entering 'claimed' is refused ('agents_at_capacity') when its assignee
-- already holds max_concurrent_tasks, atomically with the claim itself.
ALTER TABLE agents ADD COLUMN active_tasks INTEGER NOT NULL DEFAULT 0;
UPDATE agents SET active_tasks =
    (SELECT COUNT(*) FROM tasks WHERE assigned_agent_id = agents.id AND status = 'claimed');

CREATE TRIGGER tasks_claim_capacity BEFORE UPDATE OF status, assigned_agent_id ON tasks
WHEN NEW.status = 'claimed'
    AND (OLD.status <> 'claimed' OR OLD.assigned_agent_id IS NOT NEW.assigned_agent_id)
BEGIN
    SELECT RAISE(ABORT, 'agents_at_capacity')
    WHERE (SELECT active_tasks >= max_concurrent_tasks FROM agents WHERE id = NEW.assigned_agent_id);
END;

CREATE TRIGGER tasks_active_count AFTER UPDATE OF status, assigned_agent_id ON tasks
WHEN (OLD.status = 'claimed' OR NEW.status = 'claimed')
    AND (OLD.status IS NOT NEW.status OR OLD.assigned_agent_id IS NOT NEW.assigned_agent_id)
BEGIN
    UPDATE agents SET active_tasks = active_tasks - 1
        WHERE OLD.status = 'claimed' AND id = OLD.assigned_agent_id;
    UPDATE agents SET active_tasks = active_tasks + 1
        WHERE NEW.status = 'claimed' AND id = NEW.assigned_agent_id;
END;
