-- Messaging (issue #10): direct and channel messages, stored opaque.
--
--  * channels and their members. A member who leaves keeps its row with `left_at` set (and
--    loses every right to the channel: reading, sending); being added again clears it.
--  * messages: exactly one target, an agent (`recipient_id`) or a channel (`channel_id`).
--    `payload` and `nonce` are the bytes the sender sent (the server never decrypts).
--    `conversation_id` names the conversation a message belongs to: the channel's id, or for
--    a direct message an id derived from the two agents (the same both ways), so one index
--    serves the history of either kind, newest first.

CREATE TABLE channels (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    created_by  UUID NOT NULL REFERENCES agents (id),
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE channel_members (
    channel_id  UUID NOT NULL REFERENCES channels (id),
    agent_id    UUID NOT NULL REFERENCES agents (id),
    joined_at   TIMESTAMPTZ NOT NULL,
    left_at     TIMESTAMPTZ,
    PRIMARY KEY (channel_id, agent_id)
);
-- "My channels", and the membership check of every read and send.
CREATE INDEX channel_members_agent_idx ON channel_members (agent_id, channel_id)
    WHERE left_at IS NULL;

CREATE TABLE messages (
    id               UUID PRIMARY KEY,
    conversation_id  UUID NOT NULL,
    sender_id        UUID NOT NULL REFERENCES agents (id),
    recipient_id     UUID REFERENCES agents (id),
    channel_id       UUID REFERENCES channels (id),
    encrypted        BOOLEAN NOT NULL,
    payload          BYTEA NOT NULL CHECK (length(payload) BETWEEN 1 AND 24576),
    nonce            BYTEA CHECK (nonce IS NULL OR length(nonce) = 24),
    created_at       TIMESTAMPTZ NOT NULL,
    CONSTRAINT messages_one_target CHECK ((recipient_id IS NULL) <> (channel_id IS NULL)),
    CONSTRAINT messages_channel_conversation CHECK (channel_id IS NULL OR conversation_id = channel_id),
    CONSTRAINT messages_encrypted_nonce CHECK (NOT encrypted OR nonce IS NOT NULL)
);
CREATE INDEX messages_conversation_idx ON messages (conversation_id, created_at, id);
