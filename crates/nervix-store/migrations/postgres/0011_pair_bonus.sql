-- The level bonus follows the pair (issue #9): a settlement that pays one counts the worker's
-- earlier completed tasks of the same poster and looks for completed work in the other
-- direction. Operator-posted tasks are no pair and stay out of this index, so the treasury's
-- tasks (most of them, and every task of the benchmark) cost it nothing to maintain.
CREATE INDEX tasks_pair_idx ON tasks (posted_by, assigned_agent_id)
    WHERE status = 'completed' AND funded_by_treasury = FALSE;
