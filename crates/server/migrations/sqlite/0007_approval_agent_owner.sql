-- The member who owns the held call's agent (who created it and answers for it). That member's
-- devices see the held call, to know why their agent waits, even when they may not answer it
-- (a shared credential's calls are answered by admins). NULL for calls held before this column.
ALTER TABLE approvals ADD COLUMN agent_owner TEXT;
