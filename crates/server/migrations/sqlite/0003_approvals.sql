-- Live approvals: an agent's call held by the broker while the devices that may authorise it are
-- asked. A row is created `pending` and leaves that state exactly once (approved, denied or
-- expired); the conditional UPDATE that moves it is what makes a late or second answer fail.
-- `capability` is the answering device's capability, sealed to the broker (the database cannot
-- open it); the holding broker clears it once it has taken it.
CREATE TABLE approvals (
    workspace_id      TEXT NOT NULL REFERENCES workspaces(id),
    id                TEXT NOT NULL,
    agent_id          TEXT NOT NULL,
    credential_id     TEXT NOT NULL,
    -- Who may answer: the owner's devices for a personal credential (NULL: admins' devices).
    credential_owner  TEXT,
    credential_name   TEXT NOT NULL,
    method            TEXT NOT NULL,
    host              TEXT NOT NULL,
    path              TEXT NOT NULL,
    -- JSON array of the query's parameter names (never their values).
    query_keys        TEXT NOT NULL CHECK (json_valid(query_keys)),
    body_size         INTEGER,
    -- JSON array of the policy ids that would allow the call once approved.
    policy_ids        TEXT NOT NULL CHECK (json_valid(policy_ids)),
    status            TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'expired')),
    created_at        INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    decided_at        INTEGER,
    decided_by_device TEXT,
    capability        TEXT,
    PRIMARY KEY (workspace_id, id),
    FOREIGN KEY (workspace_id, agent_id) REFERENCES agents(workspace_id, id)
) STRICT;
CREATE INDEX approvals_pending ON approvals (workspace_id, status, created_at);
