-- The workspace's kill switch: while a workspace has a row here, the proxy refuses every agent
-- call in it (`403 agents_paused`), and calls held for approval are let go with the same answer.
-- At most one row per workspace: pausing again keeps the first pause (and who made it); resuming
-- deletes the row. Who paused is kept because the member who paused may resume, besides admins.
CREATE TABLE agent_pauses (
    workspace_id      TEXT PRIMARY KEY NOT NULL REFERENCES workspaces(id),
    paused_by_member  TEXT NOT NULL,
    paused_by_device  TEXT NOT NULL,
    paused_at         INTEGER NOT NULL,
    FOREIGN KEY (workspace_id, paused_by_member) REFERENCES members(workspace_id, id),
    FOREIGN KEY (workspace_id, paused_by_device) REFERENCES devices(workspace_id, id)
) STRICT;
