-- Refresh leases: who may refresh a credential's OAuth tokens at the provider right now (the same
-- table as migrations/sqlite/0005_refresh_lease.sql, which explains the protocol). On PostgreSQL
-- the lease is what serialises refreshes across broker replicas sharing this database, besides
-- devices: the conditional upsert that takes it is one statement, so two replicas racing for it
-- cannot both win.
--
-- * Row-level security as for every workspace-scoped table (0001).
-- * No cache-generation trigger (0002): the proxy's read cache does not mirror leases (they are
--   read and written on the database only), and a lease is taken on the call path, where bumping
--   the generation would empty every replica's cache at each refresh.
CREATE TABLE refresh_leases (
    workspace_id      TEXT COLLATE "C" NOT NULL,
    credential_id     TEXT COLLATE "C" NOT NULL,
    id                TEXT COLLATE "C" NOT NULL,
    holder_device     TEXT COLLATE "C",
    taken_at          BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL CHECK (expires_at > taken_at),
    PRIMARY KEY (workspace_id, credential_id),
    FOREIGN KEY (workspace_id, credential_id) REFERENCES credentials(workspace_id, id)
        ON DELETE CASCADE,
    FOREIGN KEY (workspace_id, holder_device) REFERENCES devices(workspace_id, id)
);

ALTER TABLE refresh_leases ENABLE ROW LEVEL SECURITY;
ALTER TABLE refresh_leases FORCE ROW LEVEL SECURITY;
CREATE POLICY workspace_isolation ON refresh_leases
    USING (workspace_id = current_setting('latchkey.workspace', true));

-- The service role's privileges, now with refresh_leases (replaces 0004's function, keeping its
-- SELECT on cache_generation: a broker that cannot read it refuses to start).
CREATE OR REPLACE FUNCTION latchkey_grant_service(service name) RETURNS void
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    t text;
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), service);
    FOREACH t IN ARRAY ARRAY['workspaces', 'members', 'devices', 'wrapped_keys', 'invites',
                             'credentials', 'agents', 'grants', 'policies', 'seen_nonces',
                             'approvals', 'agent_pauses', 'refresh_leases', 'audit_log',
                             'agent_token_workspaces', 'device_workspaces', 'invite_workspaces',
                             'cache_generation', '_sqlx_migrations'] LOOP
        EXECUTE format('REVOKE ALL ON %I FROM %I', t, service);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['workspaces', 'members', 'devices', 'wrapped_keys', 'invites',
                             'credentials', 'agents', 'grants', 'policies', 'seen_nonces',
                             'approvals', 'agent_pauses', 'refresh_leases'] LOOP
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
