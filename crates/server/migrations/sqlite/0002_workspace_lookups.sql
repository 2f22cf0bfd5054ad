-- The lookups that precede knowing a request's workspace: an agent by its token hash, a device
-- by its id (the key id of request signatures), an invite by its code hash. Each maps one key to
-- its workspace id and nothing else; the store then reads the row itself scoped to that
-- workspace. On PostgreSQL these are tables outside row-level security, kept by triggers; here
-- they are views, so both backends run the same queries.

CREATE VIEW agent_token_workspaces AS SELECT token_hash, workspace_id FROM agents;
CREATE VIEW device_workspaces AS SELECT id AS device_id, workspace_id FROM devices;
CREATE VIEW invite_workspaces AS SELECT code_hash, workspace_id FROM invites;
