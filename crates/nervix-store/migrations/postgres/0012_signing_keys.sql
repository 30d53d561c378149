-- Token-signing keys, kept in the database so that every node shares them (issue #11): a token
-- issued by any node verifies on all, and a rotation reaches every node through one table.
-- `secret` is the 32-byte Ed25519 seed (`seal = 'none'`), or the seed sealed with AES-256-GCM
-- under the operator's master key (`seal = 'aes-256-gcm'`: 12-byte nonce, 32-byte ciphertext,
-- 16-byte tag; the kid is the associated data), which is how nodes share it then (issue #14).
CREATE TABLE signing_keys (
    kid        TEXT PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL,
    seal       TEXT NOT NULL CHECK (seal IN ('none', 'aes-256-gcm')),
    secret     BYTEA NOT NULL,
    CONSTRAINT signing_keys_secret_length CHECK (
        (seal = 'none' AND length(secret) = 32) OR (seal = 'aes-256-gcm' AND length(secret) = 60)
    )
);
