-- When the proxy last forwarded an agent's call with a credential (unix seconds), NULL before
-- the first. Only calls that passed every check and were audited count; a refused call leaves
-- it alone. The proxy writes it at most once a second per credential and only forward in time.
-- It is not a change to the credential: neither `updated_at` nor `revision` moves with it.
--
-- * Row-level security: the column is under the table's existing `workspace_isolation` policy
--   (0001); nothing to add.
-- * Privileges: the service role already has SELECT and UPDATE on `credentials` (0004's
--   `latchkey_grant_service`), so the function is not replaced.
-- * Cache generation: as with `agents.last_used_at` (0002), a write of this column alone must not
--   move the shared generation, or every replica's read cache would be emptied as often as a
--   credential is used. The statement trigger of 0002 fired on any UPDATE of `credentials`; it is
--   replaced by one that names every other column. A column added to `credentials` later must be
--   added to this list (the cache mirrors whole rows).
ALTER TABLE credentials ADD COLUMN last_used_at BIGINT;

DROP TRIGGER credentials_cache_generation ON credentials;
CREATE TRIGGER credentials_cache_generation
    BEFORE INSERT OR DELETE OR TRUNCATE
        OR UPDATE OF workspace_id, id, name, provider, upstream_base_url, allowed_hosts,
                     owner_member_id, key_version, status, scopes, expires_hint, envelope,
                     created_at, updated_at, revision
    ON credentials
    FOR EACH STATEMENT EXECUTE FUNCTION latchkey_bump_cache_generation();
