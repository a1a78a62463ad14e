-- DDL capture for figoutput.
--
-- Each DDL statement writes its description (JSON) into figoutput.ddl_log and emits the same text
-- as a transactional logical message with the prefix 'figoutput.ddl', in the statement's transaction,
-- so schema changes arrive in the change stream exactly where they happened.
--
-- Why both: anyone can call pg_logical_emit_message() with any prefix, so a message alone proves
-- nothing. figoutput.ddl_log can only be written by its owner (the role that created the extension,
-- a superuser) and by this SECURITY DEFINER function; the plugin turns a 'figoutput.ddl' message into
-- a trusted DDL record only when the same transaction inserted the identical payload into
-- figoutput.ddl_log. A forged message reaches the receiver as an ordinary, untrusted MESSAGE record.
-- The row is deleted again at once: the table stays empty, the WAL keeps the insert for decoding.

CREATE TABLE figoutput.ddl_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payload text NOT NULL
);
REVOKE ALL ON TABLE figoutput.ddl_log FROM PUBLIC;
REVOKE ALL ON SCHEMA figoutput FROM PUBLIC;
GRANT USAGE ON SCHEMA figoutput TO PUBLIC;

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
