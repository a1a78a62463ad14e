-- 03_role.sql: the receiver's read-only role (least privilege).
--
-- Who:   a superuser, on the PRIMARY, connected to the database to capture (roles are cluster-wide and
--        replicate to standbys; the grants are per database). Run it once per captured database.
-- What it does:
--   - creates the role (or updates it) with LOGIN REPLICATION and nothing more: NOSUPERUSER NOCREATEDB
--     NOCREATEROLE NOBYPASSRLS. It REFUSES to touch a role that is a superuser: fig-receiver must never
--     run as one;
--   - sets its password, if one is given, as a SCRAM-SHA-256 verifier (password_encryption is set
--     to scram-sha-256 for this session), with statement logging switched off for this session so the
--     password does not land in the server log;
--   - GRANT CONNECT on this database; USAGE on the listed schemas; SELECT on all their tables (for the
--     initial and incremental copies); and default privileges so tables created later in those schemas
--     are readable too.
--
-- psql variables:
--   role       the role name (default fig)
--   password   its password (optional when the role exists; without it a new role gets no password and
--              you set one afterwards with psql's \password, which never sends the clear text). A
--              precomputed SCRAM verifier ('SCRAM-SHA-256$4096:...') is also accepted as is.
--   schemas    comma-separated schema names, exact spelling (default public)
--   owners     comma-separated roles that create tables in those schemas, for the default privileges
--              (default: the owners of those schemas and of the tables already in them)
--
-- Usage:
--   psql -h PRIMARY -U postgres -d appdb -v role=fig -v password="$FIG_PASSWORD" -v schemas=public,billing -f sql/03_role.sql
--
-- Note what REPLICATION means: a role that can use a logical replication slot receives the changes of
-- EVERY table of the database through it, whatever its SELECT grants. The grants below only limit what
-- it can read with queries. Publications and figoutput's table options are filters, not a security
-- boundary.
--
-- Also needed, outside SQL: a pg_hba.conf line for the role. Logical replication connections name
-- their database like ordinary ones (the keyword "replication" in pg_hba.conf only matches PHYSICAL
-- replication), e.g.  hostssl  appdb  fig  10.0.0.0/8  scram-sha-256
--
-- It is safe to run again.

\set ON_ERROR_STOP on
\set QUIET on
SET client_min_messages = notice;

\if :{?role}
\else
  \set role fig
\endif
\if :{?schemas}
\else
  \set schemas public
\endif
\if :{?owners}
\else
  \set owners ''
\endif

-- psql does not substitute variables inside DO bodies: hand them over as session settings.
SELECT set_config('fig.role', :'role', false) AS r,
       set_config('fig.schemas', :'schemas', false) AS s,
       set_config('fig.owners', :'owners', false) AS o
\gset

DO $check$
DECLARE
    r text := current_setting('fig.role');
    s text;
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'role % is not a superuser; run this script as one', current_user;
    END IF;
    IF pg_is_in_recovery() THEN
        RAISE EXCEPTION 'this server is a standby: roles and grants are created on the primary and replicate';
    END IF;
    IF r = '' OR r ~ '^pg_' THEN
        RAISE EXCEPTION 'invalid role name "%"', r;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r AND rolsuper) THEN
        RAISE EXCEPTION 'role "%" is a superuser; refusing to use it for fig-receiver', r
            USING HINT = 'Choose another role name (-v role=...), or remove superuser from this role yourself if it is meant to be the receiver''s only.';
    END IF;
    FOREACH s IN ARRAY string_to_array(current_setting('fig.schemas'), ',') LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = btrim(s)) THEN
            RAISE EXCEPTION 'schema "%" does not exist in database "%"', btrim(s), current_database()
                USING HINT = 'Schema names are exact (case-sensitive), comma-separated: -v schemas=public,billing';
        END IF;
    END LOOP;
END
$check$;

SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') AS role_exists,
       :{?password} AS has_password
\gset

-- Keep the password out of the server log and statistics for the rest of this session.
SET password_encryption = 'scram-sha-256';
SET log_statement = 'none';
SET log_min_duration_statement = -1;
SET log_min_error_statement = panic;

\if :role_exists
  \echo 'role' :"role" 'exists: making it LOGIN REPLICATION with no other privileges'
  ALTER ROLE :"role" WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
\else
  \echo 'creating role' :"role"
  CREATE ROLE :"role" WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
\endif
\if :has_password
  ALTER ROLE :"role" WITH PASSWORD :'password';
  \echo 'password set (SCRAM-SHA-256)'
\elif :role_exists
  \echo 'no password given: the existing password is kept'
\else
  \echo 'no password given: set one now, interactively, with   \\password' :"role"
\endif
RESET log_statement;
RESET log_min_duration_statement;
RESET log_min_error_statement;

-- Grants. \gexec runs every statement the query returns.
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), :'role') \gexec

WITH schemas AS (
    SELECT DISTINCT btrim(s) AS nspname FROM unnest(string_to_array(:'schemas', ',')) AS s
)
SELECT format('GRANT USAGE ON SCHEMA %I TO %I', nspname, :'role'),
       format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO %I', nspname, :'role')
  FROM schemas
\gexec

-- Default privileges apply to tables created later BY THE NAMED OWNER, so one grant per creator.
WITH schemas AS (
    SELECT DISTINCT btrim(s) AS nspname FROM unnest(string_to_array(:'schemas', ',')) AS s
), given AS (
    SELECT DISTINCT btrim(o) AS owner FROM unnest(string_to_array(:'owners', ',')) AS o WHERE btrim(o) <> ''
), found AS (
    SELECT pg_get_userbyid(n.nspowner) AS owner FROM pg_namespace n JOIN schemas USING (nspname)
    UNION
    SELECT pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN schemas USING (nspname) WHERE c.relkind IN ('r', 'p')
), owners AS (
    SELECT owner FROM given
    UNION
    SELECT owner FROM found WHERE NOT EXISTS (SELECT 1 FROM given) AND owner <> 'pg_database_owner'
)
SELECT format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA %I GRANT SELECT ON TABLES TO %I',
              owner, nspname, :'role')
  FROM owners CROSS JOIN schemas
 ORDER BY owner, nspname
\gexec

-- Tables with row-level security: a plain SELECT sees only what the policies allow, so copies
-- would be incomplete. Logical decoding itself ignores row security.
DO $rls$
DECLARE
    t text;
BEGIN
    SELECT string_agg(format('%I.%I', n.nspname, c.relname), ', ') INTO t
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relrowsecurity
       AND n.nspname = ANY (SELECT btrim(s) FROM unnest(string_to_array(current_setting('fig.schemas'), ',')) AS s);
    IF t IS NOT NULL THEN
        RAISE WARNING 'these tables have row-level security, so the role''s copies of them would be filtered: %', t
            USING HINT = 'Add a policy for the role, or give it BYPASSRLS if your policy allows that.';
    END IF;
END
$rls$;

\echo 'result:'
\unset QUIET
SELECT r.rolname AS role, r.rolcanlogin AS login, r.rolreplication AS replication, r.rolsuper AS superuser,
       r.rolpassword IS NOT NULL AS has_password,
       (SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = r.rolname) AS scram,
       has_database_privilege(r.rolname, current_database(), 'CONNECT') AS can_connect,
       (SELECT count(*) FROM pg_tables t
         WHERE t.schemaname = ANY (SELECT btrim(s) FROM unnest(string_to_array(:'schemas', ',')) AS s)
           AND has_table_privilege(r.rolname, format('%I.%I', t.schemaname, t.tablename), 'SELECT')) AS readable_tables
  FROM pg_authid r
 WHERE r.rolname = :'role';
