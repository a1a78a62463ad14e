//! A table with a column of every type family the receiver normalizes (scalars, enums, domains,
//! arrays of each, TOAST-sized text) and rows at the edges of each type's range: the shared fixture
//! of the tests that check two paths produce the same values (figoutput against pgoutput, a copied
//! row against a streamed one).

/// The types, and the table `t` (key `id`).
pub const EVERY_TYPE_SCHEMA: &str = r#"CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'quite "happy", really');
         CREATE DOMAIN positive AS int CHECK (VALUE > 0);
         CREATE TABLE t (
            id int PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8,
            n numeric, n2 numeric(18,2), tx text, vc varchar(10), ch char(3), nm name, by bytea,
            d date, tm time, ts timestamp, ts3 timestamp(3), tz timestamptz, u uuid, j json, jb jsonb,
            e mood, dom positive, iv interval, ip inet, big text,
            ai int[], a2 int[], at text[], ad date[], atz timestamptz[], ae mood[], an numeric[],
            ab box[], af float4[], au uuid[], aby bytea[], adom positive[]);
         ALTER TABLE t ALTER COLUMN big SET STORAGE EXTERNAL;"#;

/// Four rows of `t`, written in a session whose time zone is not UTC.
pub const EVERY_TYPE_ROWS: &str = r#"SET TimeZone = 'Asia/Kolkata';
         INSERT INTO t VALUES
           (1, true, -32768, 2147483647, -9223372036854775808, 'NaN', 'Infinity', 'NaN', 1.5,
            '', '', 'ab', 'a name', '\x', '-infinity', '00:00:00', '-infinity', '2000-01-01 00:00:00.1239',
            'infinity', '00000000-0000-0000-0000-000000000000', '{"a": [1, 2]}', '{"b": 1, "a": 2}',
            'sad', 1, '1 year 2 mons 3 days 04:05:06.789', '10.0.0.1/8', 'short',
            '{}', '{{1,2},{3,NULL}}', '{"a\"b",NULL,"NULL",""," x ","{}",plain}',
            '{"0044-03-15 BC",infinity,NULL}', '{"2026-11-24 23:45:17.123456+05:30"}',
            '{sad,"quite \"happy\", really"}', '{NaN,-Infinity,0.000001,-1}',
            '{(1,1),(0,0);(2,2),(1,1)}', '{1.5e-45,3.4028235e38,-0}', '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}',
            '{"\\x00ff",NULL}', '{1,2}'),
           (2, false, 32767, -2147483648, 9223372036854775807, '-Infinity', '-0', '-Infinity', -0.01,
            'héllo wörld ✓ 😀', 'x', 'abc', '', '\x00ff10', '0044-03-15 BC', '23:59:59.999999',
            '4713-01-01 00:00:00 BC', '294276-12-31 23:59:59.999', '294276-12-31 23:59:59.999999+00',
            'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', 'null', '[]', 'quite "happy", really', 2147483647,
            '-178000000 years', '::1', repeat('x', 100000),
            '[0:2]={7,8,9}', '[-1:0][3:4]={{1,2},{3,4}}', ARRAY['back\slash', E'tab\there', 'null'],
            '{10000-01-01,"0001-12-31 BC"}', '{infinity,-infinity}', '{}', '{}', '{}', '{}', NULL, NULL, NULL),
           (3, NULL, NULL, NULL, NULL, 1.5e-45, 2.2250738585072014e-308, 'Infinity', NULL,
            NULL, NULL, NULL, NULL, NULL, 'infinity', '24:00:00', 'infinity', NULL, '-infinity',
            NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
            NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
         INSERT INTO t (id, n, d, ts, tz) VALUES
           (4, (repeat('9', 500) || '.' || repeat('1', 300))::numeric, '5874897-12-31',
            '0001-01-01 00:00:00 BC', '1000-06-15 12:34:56.654321 BC');"#;
