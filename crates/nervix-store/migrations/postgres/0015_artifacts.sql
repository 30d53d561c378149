-- Artifacts (issue #14): files uploaded for a task by the agent working it, stored in object
-- storage under `object_key`; this row is their metadata and who may read them.
--
--  * `submission_id` is set, once, by the submission that references the file (in the
--    submit transaction). A file no submission took within a day is an orphan: the
--    orphan worker deletes the row (conditionally: still unreferenced) and then the object.
--  * `sha256` (hex) is the file's digest, its `ETag`; `checks` the automated checks run on it.

CREATE TABLE artifacts (
    id             UUID PRIMARY KEY,
    task_id        UUID NOT NULL REFERENCES tasks (id),
    uploaded_by    UUID NOT NULL REFERENCES agents (id),
    submission_id  UUID REFERENCES submissions (id),
    filename       TEXT,
    content_type   TEXT NOT NULL,
    size_bytes     BIGINT NOT NULL CHECK (size_bytes >= 0),
    sha256         TEXT NOT NULL CHECK (length(sha256) = 64),
    object_key     TEXT NOT NULL,
    checks         JSONB NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL
);
-- The orphan worker's scan: unreferenced files, oldest first.
CREATE INDEX artifacts_orphans_idx ON artifacts (created_at) WHERE submission_id IS NULL;
CREATE INDEX artifacts_submission_idx ON artifacts (submission_id) WHERE submission_id IS NOT NULL;
