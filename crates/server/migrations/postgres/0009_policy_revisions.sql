-- Policy revisions, for conditional edits: two admins editing one policy no longer overwrite each
-- other unseen. `workspaces.policy_revision` counts the workspace's policy changes; each change
-- takes the next value and stamps it on the row it writes, so a revision is never reused within
-- a workspace, even by a policy deleted and created again under the same id. Existing rows start
-- at revision 1. The service role's grants are table-wide, so the new columns need none.
ALTER TABLE workspaces ADD COLUMN policy_revision BIGINT NOT NULL DEFAULT 1 CHECK (policy_revision >= 1);
ALTER TABLE policies ADD COLUMN revision BIGINT NOT NULL DEFAULT 1 CHECK (revision >= 1);
