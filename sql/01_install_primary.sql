-- 01_install_primary.sql: install figoutput on a self-hosted PRIMARY server.
--
-- Who:   a superuser (the role that runs CREATE EXTENSION becomes the owner of figoutput's objects,
--        including the protected table figoutput.ddl_log that authenticates DDL records).
-- Where: the primary, connected to the database whose changes are to be captured. Run it once per
--        database: an extension (and its DDL capture) belongs to one database.
-- Before: the plugin files are installed on this machine (extension/: cargo pgrx install --release
--        --pg-config /path/to/pg_config), and wal_level = logical (needs a restart, see below).
--
-- What it does:
--   1. checks that this is a primary, that the role is a superuser, that wal_level is logical, that
--      replication slots and WAL senders are available, and that the figoutput files are installed;
--   2. on servers that have the setting output_plugin_libraries (the 2026-08 minor releases on), adds
--      figoutput to it with ALTER SYSTEM and reloads the configuration; older servers have no such
--      setting and load any installed plugin;
--   3. CREATE EXTENSION figoutput (the DDL capture: figoutput.ddl_log, figoutput.capture_ddl(), the
--      event triggers figoutput_ddl_command_end and figoutput_sql_drop).
--
-- psql variables (all optional):
--   no_alter_system   set it (-v no_alter_system=1) when postgresql.conf is managed by configuration
--                     management: the script then only checks output_plugin_libraries and stops with
--                     instructions if figoutput is missing, instead of running ALTER SYSTEM.
--
-- Usage:
--   psql -h HOST -U postgres -d appdb -f sql/01_install_primary.sql
--
-- It is safe to run again: every step checks first.

\set ON_ERROR_STOP on
\set QUIET on
SET client_min_messages = notice;

-- 1. Checks. A DO block raises a clear error; ON_ERROR_STOP ends the script there.
DO $check$
DECLARE
    missing text;
BEGIN
    IF pg_is_in_recovery() THEN
        RAISE EXCEPTION 'this server is a standby'
            USING HINT = 'Run 01_install_primary.sql on the primary; use 02_install_replica.sql on a PostgreSQL 16+ standby.';
    END IF;
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'role % is not a superuser', current_user
            USING HINT = 'figoutput is an untrusted extension: a superuser must create it.';
    END IF;
    IF current_setting('server_version_num')::int < 130000 THEN
        RAISE EXCEPTION 'PostgreSQL % is not supported; figoutput needs 13 or later',
            current_setting('server_version');
    END IF;
    IF current_setting('wal_level') <> 'logical' THEN
        RAISE EXCEPTION 'wal_level is %, logical decoding needs wal_level = logical', current_setting('wal_level')
            USING HINT = 'Run ALTER SYSTEM SET wal_level = logical; then RESTART the server (a reload is not enough), and run this script again.';
    END IF;
    IF current_setting('max_replication_slots')::int = 0 OR current_setting('max_wal_senders')::int = 0 THEN
        RAISE EXCEPTION 'max_replication_slots = %, max_wal_senders = %: both must be at least 1',
            current_setting('max_replication_slots'), current_setting('max_wal_senders')
            USING HINT = 'Raise them with ALTER SYSTEM (count one slot and one sender per receiver, plus physical standbys) and restart.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'figoutput') THEN
        RAISE EXCEPTION 'the figoutput extension files are not installed on this server'
            USING HINT = 'In extension/: cargo pgrx install --release --pg-config $(which pg_config) (as a user who can write to the PostgreSQL directories).';
    END IF;
    RAISE NOTICE 'checks passed: PostgreSQL %, wal_level = logical, figoutput files installed',
        current_setting('server_version');
END
$check$;

-- 2. output_plugin_libraries. ALTER SYSTEM cannot run inside a DO block or a function, so the
-- decision is made in SQL and acted on with psql's \if.
--   has_setting: the server has output_plugin_libraries at all
--   allowed:     figoutput is already in the list
--   new_list:    the current list with figoutput appended, written as an UNQUOTED list. (Quoting the
--                whole list, SET output_plugin_libraries = 'a, b', would make it ONE name "a, b".)
SELECT count(*) > 0 AS has_setting,
       coalesce(bool_or('figoutput' = ANY (string_to_array(replace(setting, ' ', ''), ','))), false) AS allowed,
       coalesce(max(CASE WHEN btrim(setting) = '' THEN 'figoutput' ELSE setting || ', figoutput' END), '') AS new_list
  FROM pg_settings
 WHERE name = 'output_plugin_libraries'
\gset

\if :has_setting
  \if :allowed
    \echo 'output_plugin_libraries already allows figoutput'
  \elif :{?no_alter_system}
    \echo 'figoutput is not in output_plugin_libraries, and no_alter_system is set.'
    \echo 'Add it where this server''s configuration is managed, e.g. in postgresql.conf:'
    \echo '    output_plugin_libraries = ':'new_list'
    \echo 'then reload (SELECT pg_reload_conf()) and run this script again.'
    DO $stop$ BEGIN RAISE EXCEPTION 'figoutput is not allowed by output_plugin_libraries (no_alter_system is set)'; END $stop$;
  \else
    \echo 'adding figoutput to output_plugin_libraries:' :new_list
    ALTER SYSTEM SET output_plugin_libraries = :new_list;
    -- The reload reaches this session at its next command; give the postmaster a moment.
    SELECT pg_reload_conf() AS reloaded, pg_sleep(0.5) AS slept \gset
  \endif
\else
  \echo 'this server has no output_plugin_libraries setting (a minor release before 2026-08): nothing to allow'
\endif

-- 3. The extension. Its objects live in the schema figoutput, created with it.
CREATE EXTENSION IF NOT EXISTS figoutput;

-- Verify what a receiver will rely on.
DO $verify$
DECLARE
    n_triggers int;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'output_plugin_libraries')
       AND NOT 'figoutput' = ANY (string_to_array(replace(current_setting('output_plugin_libraries'), ' ', ''), ',')) THEN
        RAISE EXCEPTION 'output_plugin_libraries is "%" and does not list figoutput',
            current_setting('output_plugin_libraries')
            USING HINT = 'Check SELECT * FROM pg_file_settings WHERE name = ''output_plugin_libraries'' for a setting that overrides it.';
    END IF;
    SELECT count(*) INTO n_triggers
      FROM pg_event_trigger
     WHERE evtname IN ('figoutput_ddl_command_end', 'figoutput_sql_drop') AND evtenabled <> 'D';
    IF n_triggers <> 2 THEN
        RAISE WARNING 'figoutput''s DDL event triggers are missing or disabled (% of 2 enabled): DDL records will not be emitted', n_triggers;
    END IF;
    -- The guard that keeps figoutput.ddl_log for the DDL capture alone; without it figoutput trusts
    -- no DDL message (an extension created by a figoutput from before the guard).
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                    WHERE tgrelid = 'figoutput.ddl_log'::regclass AND tgname = 'ddl_log_guard' AND tgenabled = 'A') THEN
        RAISE WARNING 'figoutput.ddl_log has no guard trigger firing ALWAYS: DDL will arrive as untrusted messages, not DDL records'
            USING HINT = 'The extension was created by an older figoutput, or the trigger ddl_log_guard was dropped or disabled: DROP EXTENSION figoutput; CREATE EXTENSION figoutput;';
    END IF;
    RAISE NOTICE 'figoutput % installed in database "%" (record format version %)',
        (SELECT extversion FROM pg_extension WHERE extname = 'figoutput'),
        current_database(), figoutput.format_version();
END
$verify$;

\echo 'Next: 03_role.sql (the receiver''s role), 04_publication.sql (optional with figoutput), 05_slot.sql.'
