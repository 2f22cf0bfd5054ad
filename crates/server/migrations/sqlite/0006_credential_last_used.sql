-- When the proxy last forwarded an agent's call with a credential (unix seconds), NULL before
-- the first. Only calls that passed every check and were audited count; a refused call leaves
-- it alone. The proxy writes it at most once a second per credential and only forward in time.
-- It is not a change to the credential: neither `updated_at` nor `revision` moves with it.
ALTER TABLE credentials ADD COLUMN last_used_at INTEGER;
