-- Refresh leases: who may refresh a credential's OAuth tokens at the provider right now. A
-- provider that rotates refresh tokens with reuse detection (RFC 9700) revokes the whole grant
-- when one refresh token is presented twice, so two refreshers (the broker's proxy, a device's
-- desktop app, its CLI, another device, another broker replica) must never present the same one.
-- Every refresher takes the credential's lease before it calls the provider and gives it back
-- when the new pair is stored (in the same transaction as the store) or when it gives up.
--
-- At most one row per credential. A lease is taken by a conditional upsert that inserts the row,
-- or replaces it once `expires_at` has passed (the holder crashed or hung): whoever the statement
-- changed the row for holds it. `id` is a random UUID chosen by the broker at each take, so a
-- lease taken over is a new lease and the old holder's id no longer matches. Deleting the
-- credential deletes its lease.
CREATE TABLE refresh_leases (
    workspace_id      TEXT NOT NULL,
    credential_id     TEXT NOT NULL,
    id                TEXT NOT NULL,
    -- The device holding the lease; NULL when the broker itself (the proxy's refresh) holds it.
    holder_device     TEXT,
    taken_at          INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL CHECK (expires_at > taken_at),
    PRIMARY KEY (workspace_id, credential_id),
    FOREIGN KEY (workspace_id, credential_id) REFERENCES credentials(workspace_id, id)
        ON DELETE CASCADE,
    FOREIGN KEY (workspace_id, holder_device) REFERENCES devices(workspace_id, id)
) STRICT;
