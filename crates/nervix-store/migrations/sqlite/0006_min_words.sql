-- SQLite twin of postgres/0006_min_words.sql; keep the two in step.
--
-- The fewest words a text or markdown answer may have (the `length` check). NULL for json and
-- code tasks, which it does not apply to; tasks posted before it get the default, 20.

ALTER TABLE tasks ADD COLUMN min_words INTEGER CHECK (min_words BETWEEN 0 AND 100000);

UPDATE tasks SET min_words = 20 WHERE kind IN ('text', 'markdown');
