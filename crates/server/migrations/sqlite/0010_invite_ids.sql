-- Invite ids: a pending invite can be listed and revoked by its id, since the code itself is
-- shown once and only its hash is stored. Existing rows get a random version 4 UUID, the form
-- every new invite's id takes. The column stays nullable because SQLite cannot add a NOT NULL
-- column without a default; every invite the broker stores has one.
ALTER TABLE invites ADD COLUMN id TEXT;
UPDATE invites SET id =
    lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4'
    || substr(lower(hex(randomblob(2))), 2) || '-'
    || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2) || '-'
    || lower(hex(randomblob(6)));
CREATE UNIQUE INDEX invites_id ON invites (id);
