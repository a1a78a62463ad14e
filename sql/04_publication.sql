-- 04_publication.sql: the publication naming the tables to capture.
--
-- With pgoutput (RDS, Aurora, Cloud SQL, Azure, or wherever figoutput is not installed) a publication
-- is REQUIRED: pgoutput sends only the changes of tables in the publications the receiver names. With
-- figoutput it is OPTIONAL: without one, figoutput sends every table (narrowed by its include_tables /
-- exclude_tables options); with the option publication_names it sends only the tables, and only the
-- actions (insert, update, delete, truncate), that the named publications publish. figoutput does NOT
-- apply publication row filters (WHERE) or column lists; see docs/FIGOUTPUT.md.
--
-- Who:   a superuser or the owner of the tables, on the PRIMARY (publications replicate to standbys),
--        connected to the database to capture.
--
-- psql variables (give tables, schemas, or all_tables):
--   publication      its name (default fig)
--   tables           comma-separated tables, written as in SQL: billing.invoice, public."Odd Name"
--                    (unquoted names fold to lower case; a name containing a comma cannot be listed here)
--   schemas          comma-separated schema names, exact spelling: every table in them, now and later
--                    (PostgreSQL 15+)
--   all_tables       set it (-v all_tables=1) for FOR ALL TABLES (every table, now and later)
--   publish          the actions (default 'insert, update, delete, truncate')
--   allow_no_identity  set it to go ahead although some tables have no replica identity (see below)
--
-- Usage:
--   psql -h PRIMARY -U postgres -d appdb -v tables='billing.invoice, public.ledger' -f sql/04_publication.sql
--   psql -h PRIMARY -U postgres -d appdb -v schemas=billing -f sql/04_publication.sql
--
-- Running it again with other tables REPLACES the publication's table list (ALTER PUBLICATION ... SET).
--
-- Replica identity, checked before anything changes: once a table is in a publication that publishes
-- updates or deletes, PostgreSQL REJECTS every UPDATE and DELETE on it unless it has a replica
-- identity (a primary key, REPLICA IDENTITY USING INDEX, or REPLICA IDENTITY FULL). That would break
-- the application, so the script stops and lists such tables; fix them first (ALTER TABLE ... ADD
-- PRIMARY KEY, or ALTER TABLE ... REPLICA IDENTITY FULL) or publish only inserts and truncates.
--
-- Partitioned tables: the publication is created with publish_via_partition_root = false, so pgoutput
-- reports changes under the partitions' own names, as figoutput always does.
--
-- DDL with pgoutput: there are no DDL records. fig-receiver trusts DDL only from figoutput, which
-- authenticates each captured statement itself (docs/FIGOUTPUT.md, "Who can produce a trusted DDL
-- record"); with pgoutput a 'figoutput.ddl' message is an ordinary, untrusted message, and schema
-- changes are known from pgoutput's RELATION messages.

\set ON_ERROR_STOP on
\set QUIET on
SET client_min_messages = notice;

\if :{?publication}
\else
  \set publication fig
\endif
\if :{?tables}
\else
  \set tables ''
\endif
\if :{?schemas}
\else
  \set schemas ''
\endif
\if :{?publish}
\else
  \set publish 'insert, update, delete, truncate'
\endif

SELECT set_config('fig.publication', :'publication', false) AS a,
       set_config('fig.tables', :'tables', false) AS b,
       set_config('fig.schemas', :'schemas', false) AS c,
       set_config('fig.publish', :'publish', false) AS d,
       set_config('fig.all_tables', :{?all_tables}::text, false) AS e,
       set_config('fig.allow_no_identity', :{?allow_no_identity}::text, false) AS f
\gset

-- The tables the publication will cover (leaf partitions included), in a temporary table that the
-- checks and the statement below share.
CREATE TEMPORARY TABLE fig_target (relid oid PRIMARY KEY);

DO $check$
DECLARE
    tables   text[] := array_remove(ARRAY(SELECT btrim(x) FROM unnest(string_to_array(current_setting('fig.tables'), ',')) x), '');
    schemas  text[] := array_remove(ARRAY(SELECT btrim(x) FROM unnest(string_to_array(current_setting('fig.schemas'), ',')) x), '');
    all_tables bool := current_setting('fig.all_tables')::bool;
    publish  text[] := ARRAY(SELECT btrim(x) FROM unnest(string_to_array(current_setting('fig.publish'), ',')) x);
    t text;
    rel regclass;
    missing text;
    existing record;
BEGIN
    IF pg_is_in_recovery() THEN
        RAISE EXCEPTION 'this server is a standby: create the publication on the primary (it replicates)';
    END IF;
    IF all_tables AND (cardinality(tables) > 0 OR cardinality(schemas) > 0) THEN
        RAISE EXCEPTION 'all_tables cannot be combined with tables or schemas';
    END IF;
    IF NOT all_tables AND cardinality(tables) = 0 AND cardinality(schemas) = 0 THEN
        RAISE EXCEPTION 'name what to publish: -v tables=schema.table,... or -v schemas=name,... or -v all_tables=1';
    END IF;
    IF cardinality(schemas) > 0 AND current_setting('server_version_num')::int < 150000 THEN
        RAISE EXCEPTION 'publishing whole schemas needs PostgreSQL 15; list the tables instead';
    END IF;
    IF NOT publish <@ ARRAY['insert', 'update', 'delete', 'truncate'] THEN
        RAISE EXCEPTION 'publish = "%": expected a comma-separated subset of insert, update, delete, truncate',
            current_setting('fig.publish');
    END IF;

    FOREACH t IN ARRAY tables LOOP
        rel := to_regclass(t);
        IF rel IS NULL OR (SELECT relkind FROM pg_class WHERE oid = rel) NOT IN ('r', 'p') THEN
            RAISE EXCEPTION 'table % does not exist', t
                USING HINT = 'Write names as in SQL: schema.table, with double quotes around mixed-case names.';
        END IF;
        -- pg_partition_tree lists nothing for a table that is not partitioned.
        INSERT INTO fig_target SELECT rel UNION SELECT relid FROM pg_partition_tree(rel) ON CONFLICT DO NOTHING;
    END LOOP;
    FOREACH t IN ARRAY schemas LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = t) THEN
            RAISE EXCEPTION 'schema "%" does not exist', t;
        END IF;
        INSERT INTO fig_target
        SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = t AND c.relkind IN ('r', 'p')
        UNION
        SELECT p.relid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
               LATERAL pg_partition_tree(c.oid) p
         WHERE n.nspname = t AND c.relkind = 'p'
        ON CONFLICT DO NOTHING;
    END LOOP;
    IF all_tables THEN
        INSERT INTO fig_target
        SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p'
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
        ON CONFLICT DO NOTHING;
    END IF;

    -- UPDATE and DELETE on a published table without replica identity would start failing.
    IF publish && ARRAY['update', 'delete'] THEN
        SELECT string_agg(c.oid::regclass::text, ', ' ORDER BY c.oid::regclass::text) INTO missing
          FROM fig_target f JOIN pg_class c ON c.oid = f.relid
         WHERE c.relkind = 'r'
           AND (c.relreplident = 'n'
                OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
                OR (c.relreplident = 'i' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)));
        IF missing IS NOT NULL THEN
            IF current_setting('fig.allow_no_identity')::bool THEN
                RAISE WARNING 'these tables have no replica identity; UPDATE and DELETE on them will FAIL once they are published: %', missing;
            ELSE
                RAISE EXCEPTION 'these tables have no replica identity: %', missing
                    USING DETAIL = 'Once published for updates or deletes, every UPDATE and DELETE on them would fail with "cannot update table ... because it does not have a replica identity".',
                          HINT = 'Add a primary key, or ALTER TABLE ... REPLICA IDENTITY FULL (the whole old row is then logged), or publish only inserts and truncates (-v publish=''insert, truncate''). -v allow_no_identity=1 goes ahead anyway.';
            END IF;
        END IF;
    END IF;

    SELECT pubname, puballtables INTO existing FROM pg_publication WHERE pubname = current_setting('fig.publication');
    IF FOUND AND existing.puballtables <> all_tables THEN
        RAISE EXCEPTION 'publication "%" exists and is % FOR ALL TABLES; drop it first to change that',
            existing.pubname, CASE WHEN existing.puballtables THEN '' ELSE 'not' END;
    END IF;
    RAISE NOTICE '% tables (partitions counted) will be published', (SELECT count(*) FROM fig_target);
END
$check$;

-- The statement: CREATE PUBLICATION, or ALTER PUBLICATION ... SET for an existing one.
WITH opts AS (
    SELECT current_setting('fig.publication') AS pub,
           current_setting('fig.all_tables')::bool AS all_tables,
           array_remove(ARRAY(SELECT btrim(x) FROM unnest(string_to_array(current_setting('fig.tables'), ',')) x), '') AS tables,
           array_remove(ARRAY(SELECT btrim(x) FROM unnest(string_to_array(current_setting('fig.schemas'), ',')) x), '') AS schemas,
           EXISTS (SELECT 1 FROM pg_publication WHERE pubname = current_setting('fig.publication')) AS exists
), members AS (
    SELECT concat_ws(', ',
               CASE WHEN cardinality(schemas) > 0 THEN
                   'TABLES IN SCHEMA ' || (SELECT string_agg(quote_ident(s), ', ') FROM unnest(schemas) s) END,
               CASE WHEN cardinality(tables) > 0 THEN
                   'TABLE ' || (SELECT string_agg(format('%I.%I', n.nspname, c.relname), ', ')
                                  FROM unnest(tables) t JOIN pg_class c ON c.oid = to_regclass(t)
                                  JOIN pg_namespace n ON n.oid = c.relnamespace) END) AS list
      FROM opts
), params AS (
    SELECT format('(publish = %L, publish_via_partition_root = false)', current_setting('fig.publish')) AS with
)
SELECT CASE
         WHEN o.all_tables AND o.exists THEN format('ALTER PUBLICATION %I SET %s', o.pub, p.with)
         WHEN o.all_tables THEN format('CREATE PUBLICATION %I FOR ALL TABLES WITH %s', o.pub, p.with)
         WHEN o.exists THEN format('ALTER PUBLICATION %I SET %s', o.pub, m.list)
         ELSE format('CREATE PUBLICATION %I FOR %s WITH %s', o.pub, m.list, p.with)
       END AS stmt,
       CASE WHEN o.exists AND NOT o.all_tables THEN format('ALTER PUBLICATION %I SET %s', o.pub, p.with) END AS stmt2
  FROM opts o, members m, params p
\gexec

\echo 'publication' :"publication" 'now publishes:'
\unset QUIET
SELECT p.pubname AS publication, p.puballtables AS all_tables,
       concat_ws(', ', CASE WHEN p.pubinsert THEN 'insert' END, CASE WHEN p.pubupdate THEN 'update' END,
                 CASE WHEN p.pubdelete THEN 'delete' END, CASE WHEN p.pubtruncate THEN 'truncate' END) AS actions,
       p.pubviaroot AS via_root,
       (SELECT count(*) FROM pg_publication_tables t WHERE t.pubname = p.pubname) AS tables
  FROM pg_publication p
 WHERE p.pubname = :'publication';
SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = :'publication' ORDER BY 1, 2;
