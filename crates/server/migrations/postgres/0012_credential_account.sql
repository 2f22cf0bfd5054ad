-- The account at the provider a credential acts as (`octocat`, `ana@example.com`), as the
-- connecting device found it (docs/api.md, "Credentials"); NULL when unknown. Display only: the
-- proxy never reads it. The broker checks what it accepts (1 to 200 characters, no control or
-- bidirectional-override characters, no surrounding spaces); the column checks the length.
--
-- * Row-level security: under the table's existing `workspace_isolation` policy (0001).
-- * Privileges: the service role already has SELECT, INSERT and UPDATE on `credentials`.
-- * Cache generation: the read cache mirrors whole rows, so a change of this column must move
--   the shared generation like any other but `last_used_at` (0006): the trigger names it too.
ALTER TABLE credentials ADD COLUMN account TEXT
    CHECK (account IS NULL OR char_length(account) BETWEEN 1 AND 200);

DROP TRIGGER credentials_cache_generation ON credentials;
CREATE TRIGGER credentials_cache_generation
    BEFORE INSERT OR DELETE OR TRUNCATE
        OR UPDATE OF workspace_id, id, name, provider, upstream_base_url, allowed_hosts,
                     owner_member_id, key_version, status, scopes, expires_hint, account, envelope,
                     created_at, updated_at, revision
    ON credentials
    FOR EACH STATEMENT EXECUTE FUNCTION latchkey_bump_cache_generation();
