-- DDL capture for figoutput.
--
-- Each DDL statement writes its description (JSON) into figoutput.ddl_log and emits the same text
-- as a transactional logical message with the prefix 'figoutput.ddl', in the statement's transaction,
-- so schema changes arrive in the change stream exactly where they happened.
--
-- Why both: anyone can call pg_logical_emit_message() with any prefix, so a message alone proves
-- nothing. The plugin turns a 'figoutput.ddl' message into a trusted DDL record only when the same
-- transaction inserted the identical payload into figoutput.ddl_log, and only while that table
-- carries the guard trigger below. The guard refuses every row not inserted with current_user = the
-- table's owner (the role that created the extension): in practice, every row not written by the
-- SECURITY DEFINER function capture_ddl(). Privileges alone would not do: members of
-- pg_write_all_data may insert into every table, and the owner may GRANT INSERT. A forged message
-- reaches the receiver as an ordinary, untrusted MESSAGE record. docs/FIGOUTPUT.md, "Who can produce
-- a trusted DDL record", states the rule; tests/tests/ddl_trust.rs tests it per role class.
-- The row is deleted again at once: the table stays empty, the WAL keeps the insert for decoding.

CREATE TABLE figoutput.ddl_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payload text NOT NULL
);
REVOKE ALL ON TABLE figoutput.ddl_log FROM PUBLIC;
REVOKE ALL ON SCHEMA figoutput FROM PUBLIC;
GRANT USAGE ON SCHEMA figoutput TO PUBLIC;

-- The guard. A trigger rather than a row security policy, which BYPASSRLS roles skip; it fires
-- ALWAYS, so session_replication_role = replica does not silence it; it fires for INSERT, COPY and
-- INSERT ... ON CONFLICT alike. Only the table's owner or a superuser can drop or disable it, and the
-- plugin trusts the table only while it is in place, enabled ALWAYS, without a WHEN condition
-- (extension/src/relation.rs, ddl_log_guarded). SECURITY INVOKER on purpose: current_user is the
-- role that inserts, or the owner inside capture_ddl().
CREATE FUNCTION figoutput.guard_ddl_log() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $body$
BEGIN
    -- A superuser who is not the owner is refused too: its DDL is captured like anyone's, and it
    -- could remove this guard anyway; nobody needs to write the table directly.
    IF current_user <> (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = TG_RELID) THEN
        RAISE EXCEPTION 'permission denied: only figoutput''s DDL capture writes figoutput.ddl_log'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('Role %s is not the owner of figoutput.ddl_log; a row of it would make a logical message with the prefix figoutput.ddl a trusted DDL record.', quote_ident(current_user)),
                  HINT = 'DDL is recorded by the event triggers figoutput_ddl_command_end and figoutput_sql_drop; run the DDL itself.';
    END IF;
    RETURN NEW;
END;
$body$;
REVOKE ALL ON FUNCTION figoutput.guard_ddl_log() FROM PUBLIC;

CREATE TRIGGER ddl_log_guard BEFORE INSERT ON figoutput.ddl_log
    FOR EACH ROW EXECUTE FUNCTION figoutput.guard_ddl_log();
ALTER TABLE figoutput.ddl_log ENABLE ALWAYS TRIGGER ddl_log_guard;

CREATE FUNCTION figoutput.capture_ddl() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $body$
DECLARE
    commands jsonb := '[]'::jsonb;
    r record;
    payload text;
    log_id bigint;
    -- The statement's text is kept only for objects whose statements hold no secrets (a user
    -- mapping's, a server's or a subscription's OPTIONS or CONNECTION may hold a password), and only
    -- when the query string holds that one statement (figoutput.statement_text).
    plain boolean := true;
BEGIN
    IF TG_EVENT = 'ddl_command_end' THEN
        FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
            plain := plain AND r.object_type IN ('table', 'table column', 'table constraint', 'index',
                'sequence', 'view', 'materialized view', 'type', 'domain', 'schema', 'function',
                'procedure', 'trigger', 'rule', 'policy', 'foreign table', 'foreign table column',
                'statistics object', 'collation', 'publication relation', 'publication namespace');
            commands := commands || jsonb_build_object(
                'command_tag', r.command_tag,
                'object_type', r.object_type,
                'schema', r.schema_name,
                'identity', r.object_identity,
                'objid', r.objid::bigint,
                'in_extension', r.in_extension);
        END LOOP;
    ELSIF TG_EVENT = 'sql_drop' THEN
        FOR r IN SELECT * FROM pg_event_trigger_dropped_objects() LOOP
            plain := plain AND r.object_type NOT IN ('user mapping', 'server', 'subscription',
                'foreign-data wrapper');
            commands := commands || jsonb_build_object(
                'command_tag', TG_TAG,
                'object_type', r.object_type,
                'schema', r.schema_name,
                'identity', r.object_identity,
                'objid', r.objid::bigint,
                'objsubid', r.objsubid,
                'original', r.original);
        END LOOP;
    END IF;
    IF jsonb_array_length(commands) = 0 THEN
        RETURN;
    END IF;
    payload := jsonb_build_object(
        'version', 1,
        'event', TG_EVENT,
        'tag', TG_TAG,
        'commands', commands,
        'query', CASE WHEN plain THEN figoutput.statement_text(current_query()) END,
        'role', session_user::text,
        'at', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))::text;
    INSERT INTO figoutput.ddl_log (payload) VALUES (payload) RETURNING id INTO log_id;
    DELETE FROM figoutput.ddl_log WHERE id = log_id;
    PERFORM pg_logical_emit_message(true, 'figoutput.ddl', payload);
EXCEPTION WHEN OTHERS THEN
    -- Never make a DBA's DDL fail because of capture; the receiver still sees RELATION changes.
    RAISE WARNING 'figoutput: DDL capture failed: % (%)', SQLERRM, SQLSTATE;
END;
$body$;
REVOKE ALL ON FUNCTION figoutput.capture_ddl() FROM PUBLIC;

CREATE EVENT TRIGGER figoutput_ddl_command_end ON ddl_command_end
    EXECUTE FUNCTION figoutput.capture_ddl();
CREATE EVENT TRIGGER figoutput_sql_drop ON sql_drop
    EXECUTE FUNCTION figoutput.capture_ddl();
