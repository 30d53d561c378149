-- How many tasks depend on each task. A completion or failure of a task nobody depends on
-- then needs no query of the dependency table.
-- Twin of postgres/0004_task_dependents.sql; keep the two in step.

ALTER TABLE tasks ADD COLUMN dependents INTEGER NOT NULL DEFAULT 0 CHECK (dependents >= 0);
UPDATE tasks SET dependents = (SELECT COUNT(*) FROM task_dependencies d WHERE d.depends_on = tasks.id);
