-- 05_slot.sql: create the logical replication slot the receiver reads.
--
-- Who:   the receiver's role from 03_role.sql (it has REPLICATION) or a superuser, connected to the
--        database to capture: a logical slot belongs to one database.
-- Where: the server the receiver will read: the primary, or a PostgreSQL 16+ standby prepared with
--        02_install_replica.sql (a slot lives on the server where it is created).
--
-- fig-receiver can also create its slot itself, with an exported snapshot for a consistent initial
-- copy. Create it here when your procedures want the DBA to own that step. A slot keeps every change
-- from the moment it is created, so an initial copy taken afterwards overlaps the stream instead of
-- leaving a gap.
--
-- psql variables:
--   slot     the slot name (default fig): 1 to 63 lower-case letters, digits and underscores
--   plugin   figoutput (default) or pgoutput (where figoutput cannot be installed)
--
-- Usage:
--   psql -h HOST -U fig -d appdb -f sql/05_slot.sql
--   psql -h HOST -U fig -d appdb -v slot=fig_billing -v plugin=pgoutput -f sql/05_slot.sql
--
-- !! A slot RETAINS WAL until its receiver confirms it has processed it. A receiver that stops, or a
-- slot nobody reads any more, makes WAL pile up until the disk is full and the server stops. So:
--   - monitor it (the query at the end of this script; alert on retained_wal and on active = false);
--   - consider max_slot_wal_keep_size (PostgreSQL 13+): beyond it the server invalidates the slot
--     instead of filling the disk (the receiver then needs a new slot and a new initial copy);
--   - drop slots you no longer use:  SELECT pg_drop_replication_slot('fig');
--
-- Running it again when the slot exists with the same plugin changes nothing.

\set ON_ERROR_STOP on
\set QUIET on
SET client_min_messages = notice;

\if :{?slot}
\else
  \set slot fig
\endif
\if :{?plugin}
\else
  \set plugin figoutput
\endif

SELECT set_config('fig.slot', :'slot', false) AS a, set_config('fig.plugin', :'plugin', false) AS b \gset

DO $check$
DECLARE
    slot   text := current_setting('fig.slot');
    plugin text := current_setting('fig.plugin');
    s record;
BEGIN
    IF slot !~ '^[a-z0-9_]{1,63}$' THEN
        RAISE EXCEPTION 'slot name "%" is invalid: use 1 to 63 lower-case letters, digits and underscores', slot;
    END IF;
    IF plugin NOT IN ('figoutput', 'pgoutput') THEN
        RAISE EXCEPTION 'plugin "%": fig-receiver reads figoutput or pgoutput', plugin;
    END IF;
    -- On RDS and Aurora, membership in rds_replication stands in for the REPLICATION attribute.
    IF NOT (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)
       AND NOT (EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rds_replication')
                AND pg_has_role(current_user, 'rds_replication', 'MEMBER')) THEN
        RAISE EXCEPTION 'role % has neither REPLICATION nor superuser', current_user
            USING HINT = 'Run it as the receiver''s role from 03_role.sql (on RDS and Aurora: a member of rds_replication).';
    END IF;
    IF current_setting('wal_level') <> 'logical' THEN
        RAISE EXCEPTION 'wal_level is %; logical slots need wal_level = logical (and a restart)', current_setting('wal_level');
    END IF;
    IF pg_is_in_recovery() AND current_setting('server_version_num')::int < 160000 THEN
        RAISE EXCEPTION 'this is a PostgreSQL % standby: logical slots on a standby need PostgreSQL 16 or later',
            current_setting('server_version');
    END IF;
    IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'output_plugin_libraries')
       AND NOT plugin = ANY (string_to_array(replace(current_setting('output_plugin_libraries'), ' ', ''), ',')) THEN
        RAISE EXCEPTION 'output_plugin_libraries ("%") does not allow %', current_setting('output_plugin_libraries'), plugin
            USING HINT = 'Run 01_install_primary.sql (or 02_install_replica.sql on a standby) as a superuser.';
    END IF;
    IF plugin = 'figoutput' AND NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'figoutput') THEN
        RAISE WARNING 'the figoutput extension is not created in database "%": changes will decode, but no DDL records will be emitted', current_database()
            USING HINT = 'Run 01_install_primary.sql on the primary in this database.';
    END IF;
    IF plugin = 'pgoutput' AND NOT EXISTS (SELECT 1 FROM pg_publication) THEN
        RAISE WARNING 'there is no publication in database "%": pgoutput will send nothing until one exists (04_publication.sql)', current_database();
    END IF;

    SELECT * INTO s FROM pg_replication_slots WHERE slot_name = slot;
    IF FOUND THEN
        IF s.slot_type <> 'logical' OR s.plugin IS DISTINCT FROM plugin OR s.database IS DISTINCT FROM current_database() THEN
            RAISE EXCEPTION 'slot "%" exists already (%, plugin %, database %)', slot, s.slot_type, s.plugin, s.database
                USING HINT = 'Choose another name with -v slot=..., or drop the old slot if nothing uses it: SELECT pg_drop_replication_slot(''' || slot || ''');';
        END IF;
        RAISE NOTICE 'slot "%" exists already with plugin % in this database: nothing to do', slot, plugin;
    ELSIF pg_is_in_recovery() THEN
        RAISE NOTICE 'creating the slot on a standby waits for the primary to log a snapshot of running transactions; if it takes long, run SELECT pg_log_standby_snapshot(); on the primary';
    END IF;
END
$check$;

SELECT NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = :'slot') AS create_it \gset
\unset QUIET
\if :create_it
SELECT slot_name, lsn AS consistent_point FROM pg_create_logical_replication_slot(:'slot', :'plugin');
\endif

\echo 'Monitor every slot, for example every minute (alert when active is false for long, or retained_wal grows):'
SELECT slot_name, plugin, database, active, confirmed_flush_lsn,
       pg_size_pretty(pg_wal_lsn_diff(
           CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END,
           restart_lsn)) AS retained_wal,
       wal_status, pg_size_pretty(safe_wal_size) AS safe_wal_size
  FROM pg_replication_slots
 WHERE slot_type = 'logical'
 ORDER BY slot_name;
SELECT current_setting('max_slot_wal_keep_size') AS max_slot_wal_keep_size;
