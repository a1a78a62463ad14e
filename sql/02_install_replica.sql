-- 02_install_replica.sql: prepare a PostgreSQL 16+ READ REPLICA (physical standby) for figoutput.
--
-- Logical decoding on a standby exists from PostgreSQL 16 on. It lets the receiver read changes from
-- a replica instead of the primary. What it needs:
--   on the PRIMARY:  wal_level = logical (restart), and figoutput created there with
--                    01_install_primary.sql: CREATE EXTENSION cannot run on a read-only standby, and
--                    the extension's objects (figoutput.ddl_log, the event triggers) reach the standby
--                    through physical replication like every other catalog row. DDL is captured where
--                    it runs, on the primary, and decoded on the standby from the replicated WAL.
--   on the STANDBY:  the same figoutput build installed (cargo pgrx install ... on this machine too: the
--                    shared library is loaded here, not replicated), wal_level = logical in its own
--                    configuration (restart), hot_standby_feedback = on (so the primary does not vacuum
--                    away catalog rows the standby's slot still needs; without it the slot is
--                    invalidated), figoutput in output_plugin_libraries where that setting exists, and
--                    preferably a physical replication slot (primary_slot_name) so the feedback survives
--                    disconnections.
--
-- Who:   a superuser, connected to the STANDBY, to the database whose changes are to be captured.
-- What it does: checks all of the above that can be seen from the standby; sets hot_standby_feedback
--   and output_plugin_libraries with ALTER SYSTEM (allowed on a standby: it only writes
--   postgresql.auto.conf) and reloads; loads the figoutput library once to prove it is installed.
--   It does not change wal_level (that needs a restart) and cannot check the primary's wal_level:
--   run SHOW wal_level on the primary (05_slot.sql fails clearly if it is not logical).
--
-- psql variables (all optional):
--   no_alter_system   set it (-v no_alter_system=1) when the configuration is managed elsewhere: the
--                     script then only checks and stops with instructions instead of running ALTER SYSTEM.
--
-- Usage:
--   psql -h PRIMARY -U postgres -d appdb -f sql/01_install_primary.sql      (first, on the primary)
--   psql -h REPLICA -U postgres -d appdb -f sql/02_install_replica.sql
--
-- It is safe to run again.

\set ON_ERROR_STOP on
\set QUIET on
SET client_min_messages = notice;

DO $check$
BEGIN
    IF NOT pg_is_in_recovery() THEN
        RAISE EXCEPTION 'this server is not a standby'
            USING HINT = 'On a primary, run 01_install_primary.sql instead.';
    END IF;
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'role % is not a superuser', current_user;
    END IF;
    IF current_setting('server_version_num')::int < 160000 THEN
        RAISE EXCEPTION 'PostgreSQL % cannot decode on a standby; logical decoding on a standby needs PostgreSQL 16 or later',
            current_setting('server_version')
            USING HINT = 'Upgrade the replica (and primary), or capture from the primary with 01_install_primary.sql.';
    END IF;
    IF current_setting('wal_level') <> 'logical' THEN
        RAISE EXCEPTION 'wal_level on this standby is %; logical decoding needs wal_level = logical here as well as on the primary',
            current_setting('wal_level')
            USING HINT = 'ALTER SYSTEM SET wal_level = logical; then restart the standby (and the primary, if its wal_level is not logical yet).';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'figoutput') THEN
        RAISE EXCEPTION 'the figoutput extension does not exist in database "%" on this standby', current_database()
            USING HINT = 'Run 01_install_primary.sql on the PRIMARY in this database, wait for the standby to replay it, and run this script again.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'figoutput') THEN
        RAISE EXCEPTION 'the figoutput files are not installed on this standby''s machine'
            USING HINT = 'Install the same figoutput build as on the primary: in extension/, cargo pgrx install --release --pg-config $(which pg_config).';
    END IF;
    IF (SELECT default_version FROM pg_available_extensions WHERE name = 'figoutput')
       IS DISTINCT FROM (SELECT extversion FROM pg_extension WHERE extname = 'figoutput') THEN
        RAISE WARNING 'figoutput files here are version %, the extension created on the primary is version %: install the same build on both',
            (SELECT default_version FROM pg_available_extensions WHERE name = 'figoutput'),
            (SELECT extversion FROM pg_extension WHERE extname = 'figoutput');
    END IF;
    IF current_setting('primary_slot_name') = '' THEN
        RAISE WARNING 'this standby uses no physical replication slot (primary_slot_name is empty)'
            USING HINT = 'Recommended: create one on the primary (SELECT pg_create_physical_replication_slot(''replica1'')) and set primary_slot_name, so hot_standby_feedback holds while the standby is disconnected.';
    END IF;
    RAISE NOTICE 'checks passed: PostgreSQL % standby, wal_level = logical, figoutput % present',
        current_setting('server_version'), (SELECT extversion FROM pg_extension WHERE extname = 'figoutput');
END
$check$;

-- Settings. ALTER SYSTEM cannot run inside a DO block, so the decision is made in SQL and acted on
-- with psql's \if (see 01_install_primary.sql). new_list is written unquoted on purpose.
SELECT current_setting('hot_standby_feedback')::bool AS feedback_on,
       EXISTS (SELECT 1 FROM pg_settings WHERE name = 'output_plugin_libraries') AS has_setting,
       coalesce((SELECT 'figoutput' = ANY (string_to_array(replace(setting, ' ', ''), ','))
                   FROM pg_settings WHERE name = 'output_plugin_libraries'), false) AS allowed,
       coalesce((SELECT CASE WHEN btrim(setting) = '' THEN 'figoutput' ELSE setting || ', figoutput' END
                   FROM pg_settings WHERE name = 'output_plugin_libraries'), '') AS new_list
\gset

\if :feedback_on
  \echo 'hot_standby_feedback is on'
\elif :{?no_alter_system}
  \echo 'hot_standby_feedback is off and no_alter_system is set: set hot_standby_feedback = on in this standby''s configuration and reload.'
  DO $stop$ BEGIN RAISE EXCEPTION 'hot_standby_feedback must be on for logical decoding on a standby'; END $stop$;
\else
  \echo 'setting hot_standby_feedback = on'
  ALTER SYSTEM SET hot_standby_feedback = on;
  SELECT pg_reload_conf() AS reloaded, pg_sleep(0.5) AS slept \gset
\endif

\if :has_setting
  \if :allowed
    \echo 'output_plugin_libraries already allows figoutput'
  \elif :{?no_alter_system}
    \echo 'figoutput is not in output_plugin_libraries, and no_alter_system is set. Add it to this standby''s configuration:'
    \echo '    output_plugin_libraries = ':'new_list'
    \echo 'then reload (SELECT pg_reload_conf()) and run this script again.'
    DO $stop$ BEGIN RAISE EXCEPTION 'figoutput is not allowed by output_plugin_libraries (no_alter_system is set)'; END $stop$;
  \else
    \echo 'adding figoutput to output_plugin_libraries:' :new_list
    ALTER SYSTEM SET output_plugin_libraries = :new_list;
    SELECT pg_reload_conf() AS reloaded, pg_sleep(0.5) AS slept \gset
  \endif
\else
  \echo 'this server has no output_plugin_libraries setting (a minor release before 2026-08): nothing to allow'
\endif

DO $verify$
BEGIN
    IF NOT current_setting('hot_standby_feedback')::bool THEN
        RAISE EXCEPTION 'hot_standby_feedback is still off'
            USING HINT = 'Check SELECT * FROM pg_file_settings WHERE name = ''hot_standby_feedback'' for a setting that overrides it.';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'output_plugin_libraries')
       AND NOT 'figoutput' = ANY (string_to_array(replace(current_setting('output_plugin_libraries'), ' ', ''), ',')) THEN
        RAISE EXCEPTION 'output_plugin_libraries is "%" and does not list figoutput',
            current_setting('output_plugin_libraries');
    END IF;
    -- Calling a function of the extension loads its shared library: proof that it is installed here.
    RAISE NOTICE 'standby ready: figoutput library loaded, record format version %', figoutput.format_version();
END
$verify$;

\echo 'Next: 03_role.sql runs on the PRIMARY (roles replicate to the standby); then 05_slot.sql on THIS standby.'
\echo 'If creating the slot on the standby waits for a long time, run SELECT pg_log_standby_snapshot(); on the primary.'
