-- Latchkey broker schema (SQLite).
--
-- Nothing here can hold a plaintext credential or key: credentials are envelopes (AES-256-GCM
-- under record keys the broker never stores), workspace and member keys are wrapped to device
-- X25519 keys, agent tokens are SHA-256 hashes. Identifiers are lowercase hyphenated UUIDs.
-- Times are unix seconds (INTEGER) unless named *_ms.

CREATE TABLE workspaces (
    id                TEXT PRIMARY KEY NOT NULL,
    name              TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    -- Current workspace key version; rotation swaps every shared credential and bumps this in
    -- one transaction.
    key_version       INTEGER NOT NULL DEFAULT 1 CHECK (key_version >= 1),
    created_at        INTEGER NOT NULL
) STRICT;

CREATE TABLE members (
    workspace_id      TEXT NOT NULL REFERENCES workspaces(id),
    id                TEXT NOT NULL,
    name              TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    role              TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    key_version       INTEGER NOT NULL DEFAULT 1 CHECK (key_version >= 1),
    created_at        INTEGER NOT NULL,
    removed_at        INTEGER,
    PRIMARY KEY (workspace_id, id)
) STRICT;

CREATE TABLE devices (
    workspace_id      TEXT NOT NULL,
    id                TEXT NOT NULL,
    member_id         TEXT NOT NULL,
    name              TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    signing_key       BLOB NOT NULL CHECK (length(signing_key) = 32),
    exchange_key      BLOB NOT NULL CHECK (length(exchange_key) = 32),
    created_at        INTEGER NOT NULL,
    removed_at        INTEGER,
    PRIMARY KEY (workspace_id, id),
    FOREIGN KEY (workspace_id, member_id) REFERENCES members(workspace_id, id)
) STRICT;
-- Device ids are random UUIDs and the key id of request signatures: unique across workspaces.
CREATE UNIQUE INDEX devices_id ON devices (id);

-- Workspace and member keys, HPKE-sealed to one device and signed by the sending device.
CREATE TABLE wrapped_keys (
    workspace_id      TEXT NOT NULL,
    recipient_device  TEXT NOT NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('workspace', 'member')),
    -- 'shared' for the workspace key, the member id for a member key.
    owner             TEXT NOT NULL,
    key_version       INTEGER NOT NULL CHECK (key_version >= 1),
    bytes             BLOB NOT NULL CHECK (length(bytes) = 215),
    created_at        INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, recipient_device, kind, owner, key_version),
    CHECK ((kind = 'workspace') = (owner = 'shared')),
    FOREIGN KEY (workspace_id, recipient_device) REFERENCES devices(workspace_id, id)
) STRICT;

CREATE TABLE invites (
    workspace_id      TEXT NOT NULL REFERENCES workspaces(id),
    -- SHA-256 of the one-time code; the code itself is shown once to the inviter.
    code_hash         BLOB PRIMARY KEY NOT NULL CHECK (length(code_hash) = 32),
    role              TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    created_by        TEXT NOT NULL,
    expires_at        INTEGER NOT NULL,
    used_at           INTEGER
) STRICT;

CREATE TABLE credentials (
    workspace_id      TEXT NOT NULL REFERENCES workspaces(id),
    id                TEXT NOT NULL,
    -- The name agents use in /p/{name}/...
    name              TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    provider          TEXT NOT NULL,
    upstream_base_url TEXT NOT NULL,
    -- JSON array of host names the proxy may contact for this credential.
    allowed_hosts     TEXT NOT NULL,
    -- NULL for a shared credential, the member for a personal one.
    owner_member_id   TEXT,
    key_version       INTEGER NOT NULL CHECK (key_version >= 1),
    status            TEXT NOT NULL CHECK (status IN ('active', 'reconnect_needed', 'disabled')),
    scopes            TEXT NOT NULL DEFAULT '[]',
    expires_hint      INTEGER,
    envelope          BLOB NOT NULL CHECK (length(envelope) BETWEEN 33 AND 65569),
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, id),
    UNIQUE (workspace_id, name)
) STRICT;

CREATE TABLE agents (
    workspace_id      TEXT NOT NULL REFERENCES workspaces(id),
    id                TEXT NOT NULL,
    name              TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    owner_member_id   TEXT NOT NULL,
    token_hash        BLOB NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at        INTEGER NOT NULL,
    revoked_at        INTEGER,
    last_used_at      INTEGER,
    PRIMARY KEY (workspace_id, id)
) STRICT;

-- Standing grants: the revocable reuse window behind standing capabilities.
CREATE TABLE grants (
    workspace_id      TEXT NOT NULL,
    id                TEXT NOT NULL,
    agent_id          TEXT NOT NULL,
    credential_id     TEXT NOT NULL,
    issued_by_device  TEXT NOT NULL,
    methods           TEXT NOT NULL,
    path_patterns     TEXT NOT NULL,
    expires_at        INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    revoked_at        INTEGER,
    PRIMARY KEY (workspace_id, id)
) STRICT;

-- Seen nonces of device request signatures and single-use capabilities, kept until they expire.
CREATE TABLE seen_nonces (
    kind              TEXT NOT NULL CHECK (kind IN ('request', 'capability')),
    nonce             BLOB NOT NULL,
    expires_at        INTEGER NOT NULL,
    PRIMARY KEY (kind, nonce)
) STRICT;
CREATE INDEX seen_nonces_expiry ON seen_nonces (expires_at);

CREATE TABLE policies (
    workspace_id      TEXT NOT NULL REFERENCES workspaces(id),
    id                TEXT NOT NULL,
    description       TEXT NOT NULL DEFAULT '',
    source            TEXT NOT NULL,
    enabled           INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    updated_at        INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, id)
) STRICT;

-- Append-only, hash-chained audit log: hash = SHA-256(prev_hash || canonical record).
CREATE TABLE audit_log (
    workspace_id      TEXT NOT NULL,
    seq               INTEGER NOT NULL CHECK (seq >= 1),
    at_ms             INTEGER NOT NULL,
    record            TEXT NOT NULL,
    prev_hash         BLOB NOT NULL CHECK (length(prev_hash) = 32),
    hash              BLOB NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (workspace_id, seq)
) STRICT;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
