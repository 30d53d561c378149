-- SQLite twin of postgres/0002_tasks.sql; keep the two in step.

CREATE TABLE workflows (
    id          BLOB PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    posted_by   BLOB NOT NULL REFERENCES agents (id),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE tasks (
    id                 BLOB PRIMARY KEY NOT NULL,
    title              TEXT NOT NULL,
    description        TEXT NOT NULL,
    capabilities       TEXT NOT NULL,
    min_reputation     INTEGER NOT NULL,
    reward_cents       INTEGER NOT NULL CHECK (reward_cents > 0),
    complexity         TEXT NOT NULL,
    kind               TEXT NOT NULL,
    output_schema      TEXT,
    language           TEXT,
    deadline           TEXT NOT NULL,
    status             TEXT NOT NULL,
    workflow_id        BLOB REFERENCES workflows (id),
    workflow_key       TEXT,
    posted_by          BLOB NOT NULL REFERENCES agents (id),
    funded_by_treasury BOOLEAN NOT NULL,
    assigned_agent_id  BLOB REFERENCES agents (id),
    attempts           INTEGER NOT NULL DEFAULT 0,
    max_attempts       INTEGER NOT NULL,
    lease_expires_at   TEXT,
    retry_at           TEXT,
    notify_round       INTEGER NOT NULL DEFAULT 0,
    notified_at        TEXT,
    settled            BOOLEAN NOT NULL DEFAULT 0,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL
);
CREATE INDEX tasks_status_idx ON tasks (status, id);
CREATE INDEX tasks_assignee_idx ON tasks (assigned_agent_id, status);
CREATE INDEX tasks_workflow_idx ON tasks (workflow_id);
CREATE INDEX tasks_lease_idx ON tasks (lease_expires_at) WHERE status = 'claimed';
CREATE INDEX tasks_deadline_idx ON tasks (deadline) WHERE status IN ('blocked', 'available', 'claimed');

CREATE TABLE task_capabilities (
    task_id     BLOB NOT NULL REFERENCES tasks (id),
    capability  TEXT NOT NULL,
    PRIMARY KEY (task_id, capability)
);
CREATE INDEX task_capabilities_capability_idx ON task_capabilities (capability, task_id);

CREATE TABLE task_dependencies (
    task_id     BLOB NOT NULL REFERENCES tasks (id),
    depends_on  BLOB NOT NULL REFERENCES tasks (id),
    PRIMARY KEY (task_id, depends_on)
);
CREATE INDEX task_dependencies_upstream_idx ON task_dependencies (depends_on, task_id);

CREATE TABLE submissions (
    id             BLOB PRIMARY KEY NOT NULL,
    task_id        BLOB NOT NULL REFERENCES tasks (id),
    agent_id       BLOB NOT NULL REFERENCES agents (id),
    content        TEXT NOT NULL,
    notes          TEXT,
    quality_score  INTEGER NOT NULL,
    checks         TEXT NOT NULL,
    status         TEXT NOT NULL,
    feedback       TEXT,
    payout_cents   INTEGER,
    created_at     TEXT NOT NULL,
    decided_at     TEXT
);
CREATE INDEX submissions_task_idx ON submissions (task_id, id);
CREATE INDEX submissions_agent_idx ON submissions (agent_id, id);

-- Double-entry ledger. `balance` is a cache of SUM(entries.amount) kept in the same
-- transaction as the entries, so that "enough funds?" is one conditional UPDATE.
CREATE TABLE ledger_accounts (
    id        BLOB PRIMARY KEY NOT NULL,
    owner_id  BLOB NOT NULL,
    kind      TEXT NOT NULL,
    balance   INTEGER NOT NULL DEFAULT 0,
    CONSTRAINT ledger_accounts_owner_kind_key UNIQUE (owner_id, kind)
);

-- Append-only: no UPDATE or DELETE ever touches this table.
CREATE TABLE ledger_entries (
    id          BLOB PRIMARY KEY NOT NULL,
    txn_id      BLOB NOT NULL,
    account_id  BLOB NOT NULL REFERENCES ledger_accounts (id),
    amount      INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    task_id     BLOB,
    memo        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX ledger_entries_account_idx ON ledger_entries (account_id, id);
CREATE INDEX ledger_entries_task_idx ON ledger_entries (task_id);

CREATE TABLE idempotency_keys (
    agent_id      BLOB NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    status        INTEGER NOT NULL,
    body          TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (agent_id, key)
);
