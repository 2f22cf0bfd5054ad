-- Appending a batch of audit records in one statement. The audit writer chains records onto the
-- heads it last committed and hands them here, every workspace's in one call: one round trip and,
-- in autocommit, one transaction, where the careful path (BEGIN; the workspace setting and
-- advisory lock; the head read; one INSERT per record; COMMIT) takes five or more. Per workspace,
-- in the order given (the writer sorts them, as the careful path takes its locks), the function
-- takes the same setting and advisory lock as the careful path, then inserts the records in seq
-- order. The chain trigger (0001) still refuses a record that does not extend the stored chain,
-- so a stale head fails the whole statement, nothing is written, and the writer falls back to
-- the careful path.
--
-- * SECURITY INVOKER (the default): it runs with the service role's rights and under row-level
--   security, and can do nothing the statements it replaces could not. PostgreSQL grants EXECUTE
--   on a new function to PUBLIC, so `latchkey_grant_service` is not replaced.
-- * `batches` is JSON: [{"workspace": id, "records": [{"seq", "at_ms", "record",
--   "prev_hash", "hash"}, ...]}, ...], hashes in hex. `json`, not `jsonb`: the record text must
--   arrive byte for byte, and `json_to_recordset` unescapes strings without normalising them.
CREATE FUNCTION latchkey_audit_append(batches text) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    batch    json;
    r        record;
    appended bigint := 0;
BEGIN
    FOR batch IN SELECT value FROM json_array_elements(batches::json) LOOP
        PERFORM set_config('latchkey.workspace', batch->>'workspace', true),
                pg_advisory_xact_lock(27755, hashtext(batch->>'workspace'));
        FOR r IN SELECT * FROM json_to_recordset(batch->'records')
                 AS t(seq bigint, at_ms bigint, record text, prev_hash text, hash text)
                 ORDER BY t.seq
        LOOP
            INSERT INTO audit_log (workspace_id, seq, at_ms, record, prev_hash, hash)
            VALUES (batch->>'workspace', r.seq, r.at_ms, r.record,
                    decode(r.prev_hash, 'hex'), decode(r.hash, 'hex'));
            appended := appended + 1;
        END LOOP;
    END LOOP;
    RETURN appended;
END $$;
