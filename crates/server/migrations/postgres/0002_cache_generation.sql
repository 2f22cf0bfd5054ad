-- The read cache's shared generation: one number that every write to a table the proxy's read
-- cache mirrors (src/store/hot.rs) moves forward, in the writing transaction. Each broker reads it
-- once per proxied call and drops its cache when it changed, so a revocation committed through
-- one replica is enforced by every replica at its next call (docs/architecture.md, "Read cache").
--
-- * The bump is a statement-level trigger on every mirrored table and on the two lookup tables
--   the cache's loaders read. It runs inside the writing statement's transaction, so it commits
--   (or rolls back) with the write itself: no replica can see the new generation before the
--   write, nor the write without the new generation.
-- * The triggers fire BEFORE the statement: the writer takes the generation row's lock before
--   any lock on a mirrored row. Every writer of mirrored rows thus takes its locks in the same
--   order (generation first), so the shared row cannot close a deadlock cycle between two
--   transactions (after the statement it could: a revocation holding an agent's grants and
--   waiting for the generation, against a grant revocation holding the generation and waiting for
--   one of those grants). The price is that writes to mirrored tables commit one at a time
--   database-wide; they are management operations, not calls.
-- * `agents.last_used_at` is left out: the proxy writes it at most once a second per agent, and
--   bumping on it would empty every replica's cache as often. A column added to `agents` later
--   must be added to the trigger's column list (the cache mirrors whole rows).
-- * The function is SECURITY DEFINER, so the service role needs (and gets) only SELECT on the
--   table; it cannot set the generation back to a value a replica has already seen. A trigger
--   function cannot be called directly, and EXECUTE is revoked from PUBLIC anyway.

CREATE TABLE cache_generation (
    only_row          BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row),
    generation        BIGINT NOT NULL CHECK (generation >= 0)
);
INSERT INTO cache_generation (only_row, generation) VALUES (true, 0);

CREATE FUNCTION latchkey_bump_cache_generation() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE cache_generation SET generation = generation + 1;
    RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION latchkey_bump_cache_generation() FROM PUBLIC;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['workspaces', 'members', 'devices', 'credentials', 'grants',
                             'agent_token_workspaces', 'device_workspaces'] LOOP
        EXECUTE format(
            'CREATE TRIGGER %I BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %I
                 FOR EACH STATEMENT EXECUTE FUNCTION latchkey_bump_cache_generation()',
            t || '_cache_generation', t);
    END LOOP;
END $$;
CREATE TRIGGER agents_cache_generation
    BEFORE INSERT OR DELETE OR TRUNCATE
        OR UPDATE OF workspace_id, id, name, owner_member_id, token_hash, created_at, revoked_at
    ON agents
    FOR EACH STATEMENT EXECUTE FUNCTION latchkey_bump_cache_generation();

-- The service role's privileges, as in 0001 plus SELECT on cache_generation (a later migration
-- that replaces the function again must keep it: a broker that cannot read the generation
-- refuses to start). Replacing the function keeps its owner and its (revoked) EXECUTE privilege.
CREATE OR REPLACE FUNCTION latchkey_grant_service(service name) RETURNS void
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    t text;
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), service);
    FOREACH t IN ARRAY ARRAY['workspaces', 'members', 'devices', 'wrapped_keys', 'invites',
                             'credentials', 'agents', 'grants', 'policies', 'seen_nonces',
                             'audit_log', 'agent_token_workspaces', 'device_workspaces',
                             'invite_workspaces', 'cache_generation', '_sqlx_migrations'] LOOP
        EXECUTE format('REVOKE ALL ON %I FROM %I', t, service);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['workspaces', 'members', 'devices', 'wrapped_keys', 'invites',
                             'credentials', 'agents', 'grants', 'policies', 'seen_nonces'] LOOP
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
