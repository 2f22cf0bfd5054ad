-- Invite ids required: 0010 gave every invite an id but had to leave the column nullable (SQLite
-- adds no NOT NULL column without a default). The table is rebuilt with `id NOT NULL`, the way
-- SQLite changes a column's constraints: a new table, the rows copied, the old one dropped and
-- the new one renamed. Nothing references `invites`; the view over it is made again.
DROP VIEW invite_workspaces;

CREATE TABLE invites_rebuilt (
    workspace_id      TEXT NOT NULL REFERENCES workspaces(id),
    -- SHA-256 of the one-time code (docs/api.md, "Invite codes"); the code itself is shown once
    -- to the inviter and never stored.
    code_hash         BLOB PRIMARY KEY NOT NULL CHECK (length(code_hash) = 32),
    role              TEXT CHECK (role IN ('admin', 'member')),
    member_id         TEXT,
    -- The device that created the invite: the invite is void once that device is removed.
    created_by        TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    used_at           INTEGER,
    used_by_device    TEXT,
    -- What lists and revocations name the invite by (a UUID); unique by `invites_id` below.
    id                TEXT NOT NULL,
    CHECK ((role IS NULL) = (member_id IS NOT NULL)),
    CHECK ((used_at IS NULL) = (used_by_device IS NULL)),
    FOREIGN KEY (workspace_id, created_by) REFERENCES devices(workspace_id, id),
    FOREIGN KEY (workspace_id, member_id) REFERENCES members(workspace_id, id)
) STRICT;

INSERT INTO invites_rebuilt (workspace_id, code_hash, role, member_id, created_by, created_at,
                             expires_at, used_at, used_by_device, id)
    SELECT workspace_id, code_hash, role, member_id, created_by, created_at,
           expires_at, used_at, used_by_device, id
    FROM invites;

DROP TABLE invites;
ALTER TABLE invites_rebuilt RENAME TO invites;

CREATE INDEX invites_workspace ON invites (workspace_id, expires_at);
CREATE UNIQUE INDEX invites_id ON invites (id);
CREATE VIEW invite_workspaces AS SELECT code_hash, workspace_id FROM invites;
