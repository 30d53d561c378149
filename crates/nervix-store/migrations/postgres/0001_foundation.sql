-- Identity, auth and audit. Types are chosen to map 1:1 onto the SQLite schema through sqlx:
-- UUID ⇄ BLOB, TIMESTAMPTZ ⇄ TEXT, JSONB ⇄ TEXT, BIGINT ⇄ INTEGER.

CREATE TABLE agents (
    id                     UUID PRIMARY KEY,
    handle                 TEXT NOT NULL,
    name                   TEXT NOT NULL,
    public_key             TEXT NOT NULL,
    encryption_public_key  TEXT,
    capabilities           JSONB NOT NULL,
    metadata               JSONB NOT NULL,
    max_concurrent_tasks   BIGINT NOT NULL,
    available              BOOLEAN NOT NULL,
    role                   TEXT NOT NULL,
    suspended              BOOLEAN NOT NULL DEFAULT FALSE,
    reputation             BIGINT NOT NULL,
    rep_automated          BIGINT NOT NULL,
    rep_success            BIGINT NOT NULL,
    rep_peer               BIGINT NOT NULL,
    tasks_completed        BIGINT NOT NULL DEFAULT 0,
    tasks_failed           BIGINT NOT NULL DEFAULT 0,
    last_seen_at           TIMESTAMPTZ,
    created_at             TIMESTAMPTZ NOT NULL,
    updated_at             TIMESTAMPTZ NOT NULL,
    CONSTRAINT agents_handle_key UNIQUE (handle),
    CONSTRAINT agents_public_key_key UNIQUE (public_key)
);
CREATE INDEX agents_reputation_idx ON agents (reputation DESC, id);

CREATE TABLE agent_capabilities (
    agent_id    UUID NOT NULL REFERENCES agents (id),
    capability  TEXT NOT NULL,
    PRIMARY KEY (agent_id, capability)
);
CREATE INDEX agent_capabilities_capability_idx ON agent_capabilities (capability, agent_id);

-- Enrollment and login challenges. `payload` holds the pending enrollment request.
CREATE TABLE challenges (
    id          UUID PRIMARY KEY,
    purpose     TEXT NOT NULL,
    agent_id    UUID REFERENCES agents (id),
    public_key  TEXT NOT NULL,
    challenge   TEXT NOT NULL,
    payload     JSONB,
    failures    BIGINT NOT NULL DEFAULT 0,
    expires_at  TIMESTAMPTZ NOT NULL,
    consumed_at TIMESTAMPTZ,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX challenges_expires_idx ON challenges (expires_at);

CREATE TABLE tokens (
    jti         UUID PRIMARY KEY,
    agent_id    UUID NOT NULL REFERENCES agents (id),
    kid         TEXT NOT NULL,
    issued_at   TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX tokens_agent_idx ON tokens (agent_id);

CREATE TABLE audit_log (
    id           UUID PRIMARY KEY,
    at           TIMESTAMPTZ NOT NULL,
    actor_id     UUID,
    actor_handle TEXT,
    action       TEXT NOT NULL,
    target       TEXT,
    client_ip    TEXT,
    details      JSONB NOT NULL
);
CREATE INDEX audit_log_action_idx ON audit_log (action, id);
CREATE INDEX audit_log_actor_idx ON audit_log (actor_id, id);
