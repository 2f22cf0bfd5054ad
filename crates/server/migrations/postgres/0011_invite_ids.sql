-- Invite ids: a pending invite can be listed and revoked by its id, since the code itself is
-- shown once and only its hash is stored. Existing rows get a random version 4 UUID, the form
-- every new invite's id takes: a volatile default fills each row as the table is rewritten, which
-- (unlike an UPDATE under the table's forced row-level security) reaches every workspace's rows.
-- The default is dropped after: the broker names every new invite's id itself.
ALTER TABLE invites ADD COLUMN id TEXT COLLATE "C" NOT NULL DEFAULT gen_random_uuid()::text;
ALTER TABLE invites ALTER COLUMN id DROP DEFAULT;
CREATE UNIQUE INDEX invites_id ON invites (id);
