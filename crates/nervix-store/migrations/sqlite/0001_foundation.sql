-- SQLite twin of postgres/0001_foundation.sql (UUID → BLOB, TIMESTAMPTZ → TEXT, JSONB → TEXT,
-- BIGINT → INTEGER); keep the two in step.

CREATE TABLE agents (
    id                     BLOB PRIMARY KEY NOT NULL,
    handle                 TEXT NOT NULL,
    name                   TEXT NOT NULL,
    public_key             TEXT NOT NULL,
    encryption_public_key  TEXT,
    capabilities           TEXT NOT NULL,
    metadata               TEXT NOT NULL,
    max_concurrent_tasks   INTEGER NOT NULL,
    available              BOOLEAN NOT NULL,
    role                   TEXT NOT NULL,
    suspended              BOOLEAN NOT NULL DEFAULT 0,
    reputation             INTEGER NOT NULL,
    rep_automated          INTEGER NOT NULL,
    rep_success            INTEGER NOT NULL,
    rep_peer               INTEGER NOT NULL,
    tasks_completed        INTEGER NOT NULL DEFAULT 0,
    tasks_failed           INTEGER NOT NULL DEFAULT 0,
    last_seen_at           TEXT,
    created_at             TEXT NOT NULL,
    updated_at             TEXT NOT NULL,
    CONSTRAINT agents_handle_key UNIQUE (handle),
    CONSTRAINT agents_public_key_key UNIQUE (public_key)
);
CREATE INDEX agents_reputation_idx ON agents (reputation DESC, id);

CREATE TABLE agent_capabilities (
    agent_id    BLOB NOT NULL REFERENCES agents (id),
    capability  TEXT NOT NULL,
    PRIMARY KEY (agent_id, capability)
);
CREATE INDEX agent_capabilities_capability_idx ON agent_capabilities (capability, agent_id);

-- Enrollment and login challenges. `payload` holds the pending enrollment request.
CREATE TABLE challenges (
    id          BLOB PRIMARY KEY NOT NULL,
    purpose     TEXT NOT NULL,
    agent_id    BLOB REFERENCES agents (id),
    public_key  TEXT NOT NULL,
    challenge   TEXT NOT NULL,
    payload     TEXT,
    failures    INTEGER NOT NULL DEFAULT 0,
    expires_at  TEXT NOT NULL,
    consumed_at TEXT,
    created_at  TEXT NOT NULL
);
CREATE INDEX challenges_expires_idx ON challenges (expires_at);

CREATE TABLE tokens (
    jti         BLOB PRIMARY KEY NOT NULL,
    agent_id    BLOB NOT NULL REFERENCES agents (id),
    kid         TEXT NOT NULL,
    issued_at   TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE INDEX tokens_agent_idx ON tokens (agent_id);

CREATE TABLE audit_log (
    id           BLOB PRIMARY KEY NOT NULL,
    at           TEXT NOT NULL,
    actor_id     BLOB,
    actor_handle TEXT,
    action       TEXT NOT NULL,
    target       TEXT,
    client_ip    TEXT,
    details      TEXT NOT NULL
);
CREATE INDEX audit_log_action_idx ON audit_log (action, id);
CREATE INDEX audit_log_actor_idx ON audit_log (actor_id, id);
