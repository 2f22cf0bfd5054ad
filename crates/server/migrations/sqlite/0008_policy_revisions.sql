-- Policy revisions, for conditional edits: two admins editing one policy no longer overwrite each
-- other unseen. `workspaces.policy_revision` counts the workspace's policy changes; each change
-- takes the next value and stamps it on the row it writes, so a revision is never reused within
-- a workspace, even by a policy deleted and created again under the same id. Existing rows start
-- at revision 1.
ALTER TABLE workspaces ADD COLUMN policy_revision INTEGER NOT NULL DEFAULT 1;
ALTER TABLE policies ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;
