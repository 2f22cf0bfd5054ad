-- Audit records by time: the audit listing's `since_ms` (the desktop app's default view is the
-- last 24 hours) bounds the seq range it reads with the smallest seq at or after that time, so a
-- quiet workspace with a long history does not read all of it to find a day's records.
CREATE INDEX audit_log_time ON audit_log (workspace_id, at_ms, seq);
