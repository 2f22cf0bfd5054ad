-- The workspace's kill switch: while a workspace has a row here, the proxy refuses every agent
-- call in it (`403 agents_paused`), and calls held for approval are let go with the same answer.
-- At most one row per workspace: pausing again keeps the first pause (and who made it); resuming
-- deletes the row. Who paused is kept because the member who paused may resume, besides admins.
--
-- The proxy reads the row through its read cache (src/store/hot.rs), so the table bumps the
-- shared cache generation like every other mirrored table (0002): a pause committed through one
-- replica drops every replica's cache at its next call, which then reads the pause.
CREATE TABLE agent_pauses (
    workspace_id      TEXT COLLATE "C" PRIMARY KEY REFERENCES workspaces(id),
    paused_by_member  TEXT COLLATE "C" NOT NULL,
    paused_by_device  TEXT COLLATE "C" NOT NULL,
    paused_at         BIGINT NOT NULL,
    FOREIGN KEY (workspace_id, paused_by_member) REFERENCES members(workspace_id, id),
    FOREIGN KEY (workspace_id, paused_by_device) REFERENCES devices(workspace_id, id)
);

ALTER TABLE agent_pauses ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_pauses FORCE ROW LEVEL SECURITY;
CREATE POLICY workspace_isolation ON agent_pauses
    USING (workspace_id = current_setting('latchkey.workspace', true));

CREATE TRIGGER agent_pauses_cache_generation
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON agent_pauses
    FOR EACH STATEMENT EXECUTE FUNCTION latchkey_bump_cache_generation();

-- The service role's privileges, now with agent_pauses (replaces 0003's function, keeping its
-- SELECT on cache_generation: a broker that cannot read it refuses to start).
CREATE OR REPLACE FUNCTION latchkey_grant_service(service name) RETURNS void
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    t text;
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), service);
    FOREACH t IN ARRAY ARRAY['workspaces', 'members', 'devices', 'wrapped_keys', 'invites',
                             'credentials', 'agents', 'grants', 'policies', 'seen_nonces',
                             'approvals', 'agent_pauses', 'audit_log', 'agent_token_workspaces',
                             'device_workspaces', 'invite_workspaces', 'cache_generation',
                             '_sqlx_migrations'] LOOP
        EXECUTE format('REVOKE ALL ON %I FROM %I', t, service);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['workspaces', 'members', 'devices', 'wrapped_keys', 'invites',
                             'credentials', 'agents', 'grants', 'policies', 'seen_nonces',
                             'approvals', 'agent_pauses'] LOOP
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
