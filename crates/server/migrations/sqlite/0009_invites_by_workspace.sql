-- Invites by workspace: counting a workspace's pending invites (at most 100, checked at every new
-- invite) and deleting its expired ones read only that workspace's rows instead of the table.
CREATE INDEX invites_workspace ON invites (workspace_id, expires_at);
