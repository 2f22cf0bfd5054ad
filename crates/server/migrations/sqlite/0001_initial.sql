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

-- One-time invite codes. Two kinds: a new member with `role` (member_id NULL), or another device
-- of the existing member `member_id` (role NULL: the member keeps theirs).
CREATE TABLE invites (
    workspace_id      TEXT NOT NULL REFERENCES workspaces(id),
    -- SHA-256 of the one-time code (docs/api.md, "Invite codes"); the code itself is shown once
    -- to the inviter and never stored.
    code_hash         BLOB PRIMARY KEY NOT NULL CHECK (length(code_hash) = 32),
    role              TEXT CHECK (role IN ('admin', 'member')),
    member_id         TEXT,
    -- The device that created the invite: the invite is void once that device is removed.
    created_by        TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    used_at           INTEGER,
    used_by_device    TEXT,
    CHECK ((role IS NULL) = (member_id IS NOT NULL)),
    CHECK ((used_at IS NULL) = (used_by_device IS NULL)),
    FOREIGN KEY (workspace_id, created_by) REFERENCES devices(workspace_id, id),
    FOREIGN KEY (workspace_id, member_id) REFERENCES members(workspace_id, id)
) STRICT;

CREATE TABLE credentials (
    workspace_id      TEXT NOT NULL REFERENCES workspaces(id),
    -- Chosen by the creating device: it is bound into the envelope's AAD.
    id                TEXT NOT NULL,
    -- The name agents use in /p/{name}/...: [a-z0-9][a-z0-9._-]{0,63}, unique in the workspace.
    name              TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 64),
    provider          TEXT NOT NULL,
    -- https://host[:port][/base path] without a trailing slash (http only for loopback hosts).
    upstream_base_url TEXT NOT NULL,
    -- JSON array of lowercase host[:port] entries the proxy may contact ("*.example.com" allowed).
    allowed_hosts     TEXT NOT NULL CHECK (json_valid(allowed_hosts)),
    -- NULL for a shared credential, the member for a personal one.
    owner_member_id   TEXT,
    -- Always the owner's current key version (workspaces.key_version or members.key_version):
    -- every write checks it, rotation swaps all envelopes of the owner in one transaction.
    key_version       INTEGER NOT NULL CHECK (key_version >= 1),
    status            TEXT NOT NULL CHECK (status IN ('active', 'reconnect_needed', 'disabled')),
    scopes            TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(scopes)),
    expires_hint      INTEGER,
    -- The sealed credential (format in docs/protocol.md); the broker cannot open it.
    envelope          BLOB NOT NULL CHECK (length(envelope) BETWEEN 33 AND 65569),
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    -- Optimistic-concurrency token: +1 on every change (envelope, metadata, status, rotation).
    revision          INTEGER NOT NULL DEFAULT 1 CHECK (revision >= 1),
    PRIMARY KEY (workspace_id, id),
    UNIQUE (workspace_id, name),
    FOREIGN KEY (workspace_id, owner_member_id) REFERENCES members(workspace_id, id)
) STRICT;

CREATE TABLE agents (
    workspace_id      TEXT NOT NULL REFERENCES workspaces(id),
    id                TEXT NOT NULL,
    name              TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    owner_member_id   TEXT NOT NULL,
    -- SHA-256 of the agent token under Latchkey's label (docs/protocol.md, "Agent tokens"); the
    -- token itself is shown once and never stored. Regeneration replaces it.
    token_hash        BLOB NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at        INTEGER NOT NULL,
    revoked_at        INTEGER,
    last_used_at      INTEGER,
    PRIMARY KEY (workspace_id, id),
    FOREIGN KEY (workspace_id, owner_member_id) REFERENCES members(workspace_id, id)
) STRICT;

-- Standing grants: the revocable reuse window behind standing capabilities. The capability itself
-- stays with the agent; this row only lets the broker refuse it once revoked. No foreign key to
-- credentials: deleting a credential revokes its grants and keeps them as history.
CREATE TABLE grants (
    workspace_id      TEXT NOT NULL,
    -- Chosen by the issuing device: it is the capability's grant id.
    id                TEXT NOT NULL,
    agent_id          TEXT NOT NULL,
    credential_id     TEXT NOT NULL,
    issued_by_device  TEXT NOT NULL,
    -- JSON arrays: method names ("GET", ...) and path patterns ("/repos/*/issues/**").
    methods           TEXT NOT NULL CHECK (json_valid(methods)),
    path_patterns     TEXT NOT NULL CHECK (json_valid(path_patterns)),
    expires_at        INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    revoked_at        INTEGER,
    PRIMARY KEY (workspace_id, id),
    FOREIGN KEY (workspace_id, agent_id) REFERENCES agents(workspace_id, id),
    FOREIGN KEY (workspace_id, issued_by_device) REFERENCES devices(workspace_id, id)
) STRICT;
CREATE INDEX grants_agent ON grants (workspace_id, agent_id);

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

-- Append-only, hash-chained audit log, one chain per workspace (docs/protocol.md, "Audit log"):
-- hash = SHA-256("latchkey audit v1\0" || prev_hash || record), record = canonical JSON that
-- names its own workspace and seq. No foreign key: the log outlives what it talks about.
CREATE TABLE audit_log (
    workspace_id      TEXT NOT NULL,
    seq               INTEGER NOT NULL CHECK (seq >= 1),
    -- Copy of the record's at_ms for time filters; verification checks they agree.
    at_ms             INTEGER NOT NULL,
    record            TEXT NOT NULL CHECK (json_valid(record)),
    prev_hash         BLOB NOT NULL CHECK (length(prev_hash) = 32),
    hash              BLOB NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (workspace_id, seq)
) STRICT;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
-- Whoever writes, a record can only extend its chain: the next seq, after the current head.
CREATE TRIGGER audit_log_extends_chain BEFORE INSERT ON audit_log
WHEN NEW.seq != COALESCE((SELECT max(seq) FROM audit_log WHERE workspace_id = NEW.workspace_id), 0) + 1
  OR NEW.prev_hash != COALESCE(
       (SELECT hash FROM audit_log WHERE workspace_id = NEW.workspace_id AND seq = NEW.seq - 1),
       zeroblob(32))
BEGIN SELECT RAISE(ABORT, 'audit log records must extend their chain'); END;
