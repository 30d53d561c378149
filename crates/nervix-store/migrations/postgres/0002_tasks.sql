-- Task engine: workflows, tasks, dependencies, submissions, the ledger and idempotency keys.

CREATE TABLE workflows (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    posted_by   UUID NOT NULL REFERENCES agents (id),
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE tasks (
    id                 UUID PRIMARY KEY,
    title              TEXT NOT NULL,
    description        TEXT NOT NULL,
    capabilities       JSONB NOT NULL,
    min_reputation     BIGINT NOT NULL,
    reward_cents       BIGINT NOT NULL CHECK (reward_cents > 0),
    complexity         TEXT NOT NULL,
    kind               TEXT NOT NULL,
    output_schema      JSONB,
    language           TEXT,
    deadline           TIMESTAMPTZ NOT NULL,
    status             TEXT NOT NULL,
    workflow_id        UUID REFERENCES workflows (id),
    workflow_key       TEXT,
    posted_by          UUID NOT NULL REFERENCES agents (id),
    funded_by_treasury BOOLEAN NOT NULL,
    assigned_agent_id  UUID REFERENCES agents (id),
    attempts           BIGINT NOT NULL DEFAULT 0,
    max_attempts       BIGINT NOT NULL,
    lease_expires_at   TIMESTAMPTZ,
    retry_at           TIMESTAMPTZ,
    notify_round       BIGINT NOT NULL DEFAULT 0,
    notified_at        TIMESTAMPTZ,
    settled            BOOLEAN NOT NULL DEFAULT FALSE,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL
);
CREATE INDEX tasks_status_idx ON tasks (status, id);
CREATE INDEX tasks_assignee_idx ON tasks (assigned_agent_id, status);
CREATE INDEX tasks_workflow_idx ON tasks (workflow_id);
CREATE INDEX tasks_lease_idx ON tasks (lease_expires_at) WHERE status = 'claimed';
CREATE INDEX tasks_deadline_idx ON tasks (deadline) WHERE status IN ('blocked', 'available', 'claimed');

CREATE TABLE task_capabilities (
    task_id     UUID NOT NULL REFERENCES tasks (id),
    capability  TEXT NOT NULL,
    PRIMARY KEY (task_id, capability)
);
CREATE INDEX task_capabilities_capability_idx ON task_capabilities (capability, task_id);

CREATE TABLE task_dependencies (
    task_id     UUID NOT NULL REFERENCES tasks (id),
    depends_on  UUID NOT NULL REFERENCES tasks (id),
    PRIMARY KEY (task_id, depends_on)
);
CREATE INDEX task_dependencies_upstream_idx ON task_dependencies (depends_on, task_id);

CREATE TABLE submissions (
    id             UUID PRIMARY KEY,
    task_id        UUID NOT NULL REFERENCES tasks (id),
    agent_id       UUID NOT NULL REFERENCES agents (id),
    content        JSONB NOT NULL,
    notes          TEXT,
    quality_score  BIGINT NOT NULL,
    checks         JSONB NOT NULL,
    status         TEXT NOT NULL,
    feedback       TEXT,
    payout_cents   BIGINT,
    created_at     TIMESTAMPTZ NOT NULL,
    decided_at     TIMESTAMPTZ
);
CREATE INDEX submissions_task_idx ON submissions (task_id, id);
CREATE INDEX submissions_agent_idx ON submissions (agent_id, id);

-- Double-entry ledger. `balance` is a cache of SUM(entries.amount) kept in the same
-- transaction as the entries, so that "enough funds?" is one conditional UPDATE.
CREATE TABLE ledger_accounts (
    id        UUID PRIMARY KEY,
    owner_id  UUID NOT NULL,
    kind      TEXT NOT NULL,
    balance   BIGINT NOT NULL DEFAULT 0,
    CONSTRAINT ledger_accounts_owner_kind_key UNIQUE (owner_id, kind)
);

-- Append-only: no UPDATE or DELETE ever touches this table.
CREATE TABLE ledger_entries (
    id          UUID PRIMARY KEY,
    txn_id      UUID NOT NULL,
    account_id  UUID NOT NULL REFERENCES ledger_accounts (id),
    amount      BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    task_id     UUID,
    memo        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX ledger_entries_account_idx ON ledger_entries (account_id, id);
CREATE INDEX ledger_entries_task_idx ON ledger_entries (task_id);

CREATE TABLE idempotency_keys (
    agent_id      UUID NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    status        BIGINT NOT NULL,
    body          TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (agent_id, key)
);
