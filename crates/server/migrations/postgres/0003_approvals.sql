-- Live approvals: an agent's call held by the broker while the devices that may authorise it are
-- asked. A row is created `pending` and leaves that state exactly once (approved, denied or
-- expired); the conditional UPDATE that moves it is what makes a late or second answer fail, on
-- whichever replica it arrives. `capability` is the answering device's capability, sealed to the
-- broker (the database cannot open it); the holding broker clears it once it has taken it.
-- Replicas learn of new and answered approvals through NOTIFY on the channel `latchkey_approvals`.
CREATE TABLE approvals (
    workspace_id      TEXT COLLATE "C" NOT NULL REFERENCES workspaces(id),
    id                TEXT COLLATE "C" NOT NULL,
    agent_id          TEXT COLLATE "C" NOT NULL,
    credential_id     TEXT COLLATE "C" NOT NULL,
    credential_owner  TEXT COLLATE "C",
    credential_name   TEXT COLLATE "C" NOT NULL,
    method            TEXT COLLATE "C" NOT NULL,
    host              TEXT COLLATE "C" NOT NULL,
    path              TEXT COLLATE "C" NOT NULL,
    query_keys        TEXT COLLATE "C" NOT NULL CHECK (latchkey_is_json(query_keys)),
    body_size         BIGINT,
    policy_ids        TEXT COLLATE "C" NOT NULL CHECK (latchkey_is_json(policy_ids)),
    status            TEXT COLLATE "C" NOT NULL
                          CHECK (status IN ('pending', 'approved', 'denied', 'expired')),
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    decided_at        BIGINT,
    decided_by_device TEXT COLLATE "C",
    capability        TEXT COLLATE "C",
    PRIMARY KEY (workspace_id, id),
    FOREIGN KEY (workspace_id, agent_id) REFERENCES agents(workspace_id, id)
);
CREATE INDEX approvals_pending ON approvals (workspace_id, status, created_at);

ALTER TABLE approvals ENABLE ROW LEVEL SECURITY;
ALTER TABLE approvals FORCE ROW LEVEL SECURITY;
CREATE POLICY workspace_isolation ON approvals
    USING (workspace_id = current_setting('latchkey.workspace', true));

-- The service role's privileges, now with approvals (replaces 0002's function, keeping its SELECT
-- on cache_generation: a broker that cannot read it refuses to start).
CREATE OR REPLACE FUNCTION latchkey_grant_service(service name) RETURNS void
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    t text;
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), service);
    FOREACH t IN ARRAY ARRAY['workspaces', 'members', 'devices', 'wrapped_keys', 'invites',
                             'credentials', 'agents', 'grants', 'policies', 'seen_nonces',
                             'approvals', 'audit_log', 'agent_token_workspaces',
                             'device_workspaces', 'invite_workspaces', 'cache_generation',
                             '_sqlx_migrations'] LOOP
        EXECUTE format('REVOKE ALL ON %I FROM %I', t, service);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['workspaces', 'members', 'devices', 'wrapped_keys', 'invites',
                             'credentials', 'agents', 'grants', 'policies', 'seen_nonces',
                             'approvals'] LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO %I', t, service);
    END LOOP;
    -- Append-only: no UPDATE, DELETE or TRUNCATE.
    EXECUTE format('GRANT SELECT, INSERT ON audit_log TO %I', service);
    -- Read-only: written by the owner's triggers.
    FOREACH t IN ARRAY ARRAY['agent_token_workspaces', 'device_workspaces', 'invite_workspaces',
                             'cache_generation', '_sqlx_migrations'] LOOP
        EXECUTE format('GRANT SELECT ON %I TO %I', t, service);
    END LOOP;
END $$;
REVOKE ALL ON FUNCTION latchkey_grant_service(name) FROM PUBLIC;
