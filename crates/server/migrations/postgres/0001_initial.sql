-- Latchkey broker schema (PostgreSQL): the same tables, columns and constraints as
-- migrations/sqlite/0001_initial.sql, plus what only a shared database server needs:
--
-- * Row-level security. Every workspace-scoped table has ENABLE and FORCE ROW LEVEL SECURITY and
--   one policy: a row is visible and writable only while the transaction's `latchkey.workspace`
--   setting names its workspace (the store sets it with set_config(..., true) at the start of
--   every transaction). Without the setting a query sees nothing. FORCE makes the policy bind the
--   table owner too; only superusers and BYPASSRLS roles escape it, and the broker refuses to run
--   as either.
-- * Three lookup tables (`*_workspaces`) that map a token hash, a device id or an invite code
--   hash to its workspace: the only rows readable before the workspace is known. They hold
--   nothing else, have no RLS, are maintained by SECURITY DEFINER triggers, and the service role
--   may only read them (docs/threat-model.md).
-- * Append-only audit log by privilege: the service role is granted SELECT and INSERT on
--   audit_log only (see latchkey_grant_service below); the triggers additionally refuse UPDATE,
--   DELETE and TRUNCATE from anyone who is not allowed to disable them.
--
-- Integers are BIGINT throughout (unix seconds unless named *_ms), so every column decodes the
-- same way on both backends. JSON columns stay TEXT (the canonical audit record must come back
-- byte for byte) and are checked by casting to jsonb. Text sorts and compares by code point
-- (COLLATE "C"), as SQLite's BINARY collation does, so listings order the same on both backends.

CREATE FUNCTION latchkey_is_json(text) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    PERFORM $1::jsonb;
    RETURN true;
EXCEPTION WHEN others THEN
    RETURN false;
END $$;

CREATE TABLE workspaces (
    id                TEXT COLLATE "C" PRIMARY KEY,
    name              TEXT COLLATE "C" NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    key_version       BIGINT NOT NULL DEFAULT 1 CHECK (key_version >= 1),
    created_at        BIGINT NOT NULL
);

CREATE TABLE members (
    workspace_id      TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id),
    id                TEXT COLLATE "C" NOT NULL,
    name              TEXT COLLATE "C" NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    role              TEXT COLLATE "C" NOT NULL CHECK (role IN ('admin', 'member')),
    key_version       BIGINT NOT NULL DEFAULT 1 CHECK (key_version >= 1),
    created_at        BIGINT NOT NULL,
    removed_at        BIGINT,
    -- Insertion order, under SQLite's name for it, so listings order the same on both backends.
    rowid             BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (workspace_id, id)
);

CREATE TABLE devices (
    workspace_id      TEXT COLLATE "C" NOT NULL,
    id                TEXT COLLATE "C" NOT NULL,
    member_id         TEXT COLLATE "C" NOT NULL,
    name              TEXT COLLATE "C" NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    signing_key       BYTEA NOT NULL CHECK (length(signing_key) = 32),
    exchange_key      BYTEA NOT NULL CHECK (length(exchange_key) = 32),
    created_at        BIGINT NOT NULL,
    removed_at        BIGINT,
    rowid             BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (workspace_id, id),
    FOREIGN KEY (workspace_id, member_id) REFERENCES members(workspace_id, id)
);
CREATE UNIQUE INDEX devices_id ON devices (id);

CREATE TABLE wrapped_keys (
    workspace_id      TEXT COLLATE "C" NOT NULL,
    recipient_device  TEXT COLLATE "C" NOT NULL,
    kind              TEXT COLLATE "C" NOT NULL CHECK (kind IN ('workspace', 'member')),
    owner             TEXT COLLATE "C" NOT NULL,
    key_version       BIGINT NOT NULL CHECK (key_version >= 1),
    bytes             BYTEA NOT NULL CHECK (length(bytes) = 215),
    created_at        BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, recipient_device, kind, owner, key_version),
    CHECK ((kind = 'workspace') = (owner = 'shared')),
    FOREIGN KEY (workspace_id, recipient_device) REFERENCES devices(workspace_id, id)
);

CREATE TABLE invites (
    workspace_id      TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id),
    code_hash         BYTEA PRIMARY KEY CHECK (length(code_hash) = 32),
    role              TEXT COLLATE "C" CHECK (role IN ('admin', 'member')),
    member_id         TEXT COLLATE "C",
    created_by        TEXT COLLATE "C" NOT NULL,
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    used_at           BIGINT,
    used_by_device    TEXT COLLATE "C",
    CHECK ((role IS NULL) = (member_id IS NOT NULL)),
    CHECK ((used_at IS NULL) = (used_by_device IS NULL)),
    FOREIGN KEY (workspace_id, created_by) REFERENCES devices(workspace_id, id),
    FOREIGN KEY (workspace_id, member_id) REFERENCES members(workspace_id, id)
);

CREATE TABLE credentials (
    workspace_id      TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id),
    id                TEXT COLLATE "C" NOT NULL,
    name              TEXT COLLATE "C" NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    provider          TEXT COLLATE "C" NOT NULL,
    upstream_base_url TEXT COLLATE "C" NOT NULL,
    allowed_hosts     TEXT COLLATE "C" NOT NULL CHECK (latchkey_is_json(allowed_hosts)),
    owner_member_id   TEXT COLLATE "C",
    key_version       BIGINT NOT NULL CHECK (key_version >= 1),
    status            TEXT COLLATE "C" NOT NULL CHECK (status IN ('active', 'reconnect_needed', 'disabled')),
    scopes            TEXT COLLATE "C" NOT NULL DEFAULT '[]' CHECK (latchkey_is_json(scopes)),
    expires_hint      BIGINT,
    envelope          BYTEA NOT NULL CHECK (length(envelope) BETWEEN 33 AND 65569),
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    revision          BIGINT NOT NULL DEFAULT 1 CHECK (revision >= 1),
    PRIMARY KEY (workspace_id, id),
    UNIQUE (workspace_id, name),
    FOREIGN KEY (workspace_id, owner_member_id) REFERENCES members(workspace_id, id)
);

CREATE TABLE agents (
    workspace_id      TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id),
    id                TEXT COLLATE "C" NOT NULL,
    name              TEXT COLLATE "C" NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    owner_member_id   TEXT COLLATE "C" NOT NULL,
    token_hash        BYTEA NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at        BIGINT NOT NULL,
    revoked_at        BIGINT,
    last_used_at      BIGINT,
    PRIMARY KEY (workspace_id, id),
    FOREIGN KEY (workspace_id, owner_member_id) REFERENCES members(workspace_id, id)
);

CREATE TABLE grants (
    workspace_id      TEXT COLLATE "C" NOT NULL,
    id                TEXT COLLATE "C" NOT NULL,
    agent_id          TEXT COLLATE "C" NOT NULL,
    credential_id     TEXT COLLATE "C" NOT NULL,
    issued_by_device  TEXT COLLATE "C" NOT NULL,
    methods           TEXT COLLATE "C" NOT NULL CHECK (latchkey_is_json(methods)),
    path_patterns     TEXT COLLATE "C" NOT NULL CHECK (latchkey_is_json(path_patterns)),
    expires_at        BIGINT NOT NULL,
    created_at        BIGINT NOT NULL,
    revoked_at        BIGINT,
    PRIMARY KEY (workspace_id, id),
    FOREIGN KEY (workspace_id, agent_id) REFERENCES agents(workspace_id, id),
    FOREIGN KEY (workspace_id, issued_by_device) REFERENCES devices(workspace_id, id)
);
CREATE INDEX grants_agent ON grants (workspace_id, agent_id);

-- Not workspace-scoped (a nonce is checked before its workspace matters) and holds no secret:
-- random nonces and their expiry. No RLS.
CREATE TABLE seen_nonces (
    kind              TEXT COLLATE "C" NOT NULL CHECK (kind IN ('request', 'capability')),
    nonce             BYTEA NOT NULL,
    expires_at        BIGINT NOT NULL,
    PRIMARY KEY (kind, nonce)
);
CREATE INDEX seen_nonces_expiry ON seen_nonces (expires_at);

CREATE TABLE policies (
    workspace_id      TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id),
    id                TEXT COLLATE "C" NOT NULL,
    description       TEXT COLLATE "C" NOT NULL DEFAULT '',
    source            TEXT COLLATE "C" NOT NULL,
    enabled           BIGINT NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    updated_at        BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, id)
);

CREATE TABLE audit_log (
    workspace_id      TEXT COLLATE "C" NOT NULL,
    seq               BIGINT NOT NULL CHECK (seq >= 1),
    at_ms             BIGINT NOT NULL,
    record            TEXT COLLATE "C" NOT NULL CHECK (latchkey_is_json(record)),
    prev_hash         BYTEA NOT NULL CHECK (length(prev_hash) = 32),
    hash              BYTEA NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (workspace_id, seq)
);

CREATE FUNCTION latchkey_audit_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit log is append-only' USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION latchkey_audit_append_only();
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION latchkey_audit_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION latchkey_audit_append_only();

-- Whoever writes, a record can only extend its chain: the next seq, after the current head.
CREATE FUNCTION latchkey_audit_extends_chain() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    head_seq  BIGINT;
    head_hash BYTEA;
BEGIN
    SELECT seq, hash INTO head_seq, head_hash FROM audit_log
        WHERE workspace_id = NEW.workspace_id ORDER BY seq DESC LIMIT 1;
    IF NEW.seq <> COALESCE(head_seq, 0) + 1
       OR NEW.prev_hash <> COALESCE(head_hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea) THEN
        RAISE EXCEPTION 'audit log records must extend their chain' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER audit_log_extends_chain BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION latchkey_audit_extends_chain();

-- Row-level security: one policy per workspace-scoped table.
ALTER TABLE workspaces ENABLE ROW LEVEL SECURITY;
ALTER TABLE workspaces FORCE ROW LEVEL SECURITY;
CREATE POLICY workspace_isolation ON workspaces
    USING (id = current_setting('latchkey.workspace', true));

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['members', 'devices', 'wrapped_keys', 'invites', 'credentials',
                             'agents', 'grants', 'policies', 'audit_log'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY workspace_isolation ON %I
                 USING (workspace_id = current_setting(''latchkey.workspace'', true))', t);
    END LOOP;
END $$;

-- Lookups that precede knowing the workspace. Each maps one unguessable or public key to its
-- workspace id and nothing else; the scoped query that follows reads the row itself under RLS.
CREATE TABLE agent_token_workspaces (
    token_hash        BYTEA PRIMARY KEY,
    workspace_id      TEXT COLLATE "C" NOT NULL
);
CREATE TABLE device_workspaces (
    device_id         TEXT COLLATE "C" PRIMARY KEY,
    workspace_id      TEXT COLLATE "C" NOT NULL
);
CREATE TABLE invite_workspaces (
    code_hash         BYTEA PRIMARY KEY,
    workspace_id      TEXT COLLATE "C" NOT NULL
);

-- SECURITY DEFINER: the triggers write the lookup tables with the owner's rights, so the service
-- role needs (and gets) only SELECT on them. search_path is pinned to the migration's.
CREATE FUNCTION latchkey_index_agent_token() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        DELETE FROM agent_token_workspaces WHERE token_hash = OLD.token_hash;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO agent_token_workspaces (token_hash, workspace_id)
            VALUES (NEW.token_hash, NEW.workspace_id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER agents_index AFTER INSERT OR DELETE OR UPDATE OF token_hash, workspace_id ON agents
    FOR EACH ROW EXECUTE FUNCTION latchkey_index_agent_token();

CREATE FUNCTION latchkey_index_device() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        DELETE FROM device_workspaces WHERE device_id = OLD.id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO device_workspaces (device_id, workspace_id) VALUES (NEW.id, NEW.workspace_id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER devices_index AFTER INSERT OR DELETE OR UPDATE OF id, workspace_id ON devices
    FOR EACH ROW EXECUTE FUNCTION latchkey_index_device();

CREATE FUNCTION latchkey_index_invite() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        DELETE FROM invite_workspaces WHERE code_hash = OLD.code_hash;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO invite_workspaces (code_hash, workspace_id)
            VALUES (NEW.code_hash, NEW.workspace_id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER invites_index AFTER INSERT OR DELETE OR UPDATE OF code_hash, workspace_id ON invites
    FOR EACH ROW EXECUTE FUNCTION latchkey_index_invite();

-- The service role's privileges, in one place next to the tables they name. Run by the broker as
-- the owner after migrating (`--migrate-database-url`), for the role of `--database-url`; every
-- grant is first revoked, so running it again converges. Later migrations replace this function
-- when they add tables.
CREATE FUNCTION latchkey_grant_service(service name) RETURNS void
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    t text;
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), service);
    FOREACH t IN ARRAY ARRAY['workspaces', 'members', 'devices', 'wrapped_keys', 'invites',
                             'credentials', 'agents', 'grants', 'policies', 'seen_nonces',
                             'audit_log', 'agent_token_workspaces', 'device_workspaces',
                             'invite_workspaces', '_sqlx_migrations'] LOOP
        EXECUTE format('REVOKE ALL ON %I FROM %I', t, service);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['workspaces', 'members', 'devices', 'wrapped_keys', 'invites',
                             'credentials', 'agents', 'grants', 'policies', 'seen_nonces'] LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO %I', t, service);
    END LOOP;
    -- Append-only: no UPDATE, DELETE or TRUNCATE.
    EXECUTE format('GRANT SELECT, INSERT ON audit_log TO %I', service);
    FOREACH t IN ARRAY ARRAY['agent_token_workspaces', 'device_workspaces', 'invite_workspaces',
                             '_sqlx_migrations'] LOOP
        EXECUTE format('GRANT SELECT ON %I TO %I', t, service);
    END LOOP;
END $$;
REVOKE ALL ON FUNCTION latchkey_grant_service(name) FROM PUBLIC;
