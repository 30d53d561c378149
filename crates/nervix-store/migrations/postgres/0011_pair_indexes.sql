-- Reading what two agents did for each other, by poster, without scanning every task:
--  * the level bonus follows the pair (issue #9): a settlement that pays one counts the
--    worker's earlier completed tasks of the same poster and looks for completed work in the
--    other direction (tasks_pair_idx);
--  * reputation counts the earlier dealings of a pair in both directions, so it reads the
--    work done on the tasks an agent posted (tasks_posted_idx; without it, every recompute
--    scanned all submissions).
-- Operator-posted tasks are no pair and stay out of both indexes, so the treasury's tasks
-- (most of them, and every task of the benchmark) cost them nothing to maintain.
CREATE INDEX tasks_pair_idx ON tasks (posted_by, assigned_agent_id)
    WHERE status = 'completed' AND funded_by_treasury = FALSE;
CREATE INDEX tasks_posted_idx ON tasks (posted_by, id) WHERE funded_by_treasury = FALSE;
