-- How many tasks depend on each task. A completion or failure of a task nobody depends on
-- then needs no query of the dependency table, and posting a dependent updates (locks) its
-- upstream row, which orders the post against that upstream's completion.
-- Twin of sqlite/0004_task_dependents.sql; keep the two in step.

ALTER TABLE tasks ADD COLUMN dependents BIGINT NOT NULL DEFAULT 0 CHECK (dependents >= 0);
UPDATE tasks t SET dependents = d.n
    FROM (SELECT depends_on, COUNT(*) AS n FROM task_dependencies GROUP BY depends_on) d
    WHERE d.depends_on = t.id;
