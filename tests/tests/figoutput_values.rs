//! Every type figoutput encodes round-trips exactly through a real slot: the decoded value equals
//! what PostgreSQL itself says the stored value is (computed in SQL, not written down by hand).

use fig_format::decode::Value;
use fig_tests::figoutput::{server_with_slot, Decoded};

const PG_EPOCH_DAYS_SQL: &str = "date '2000-01-01'";

#[test]
fn scalar_types_round_trip_exactly() {
    let (_pg, mut c) = server_with_slot("s");
    c.batch_execute(
        "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
         CREATE DOMAIN positive AS int CHECK (VALUE > 0);
         CREATE TABLE t (
            id int PRIMARY KEY, b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric,
            tx text, vc varchar(10), ch char(3), nm name, by bytea, d date, tm time, ts timestamp,
            tz timestamptz, u uuid, j json, jb jsonb, e mood, dom positive, iv interval, ip inet, m money);
         SET TIME ZONE 'Asia/Kolkata';
         INSERT INTO t VALUES
           (1, true, -32768, 2147483647, -9223372036854775808, 'NaN', 'Infinity', 'NaN',
            '', '', 'ab', 'a name', '\\x', '-infinity', '00:00:00', '-infinity', 'infinity',
            '00000000-0000-0000-0000-000000000000', '{\"a\": [1, 2]}', '{\"b\": 1, \"a\": 2}', 'sad', 1,
            '1 year 2 mons 3 days 04:05:06.789', '10.0.0.1/8', '12.34'),
           (2, false, 32767, -2147483648, 9223372036854775807, '-Infinity', '-0', '-Infinity',
            'héllo wörld ✓ 😀', 'x', 'abc', '', '\\x00ff10', '0044-03-15 BC', '23:59:59.999999',
            '4713-01-01 00:00:00 BC', '294276-12-31 23:59:59.999999+00',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'null', '[]', 'happy', 2147483647,
            '-178000000 years', '::1', '-92233720368547758.08'),
           (3, NULL, NULL, NULL, NULL, 1.5e-45, 2.2250738585072014e-308, 'Infinity',
            NULL, NULL, NULL, NULL, NULL, 'infinity', NULL, 'infinity', '-infinity',
            NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
           (4, true, 0, 0, 0, 3.4028235e38, 1.7976931348623157e308,
            '-0.000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001',
            E'tab\\tnewline\\nquote''', 'ÄÖÜ', 'é', 'x', decode(repeat('ab', 3000), 'hex'), '2000-01-01', '12:00',
            '2000-01-01 00:00:00', '1999-12-31 23:59:59.999999+00', NULL, '\"string\"', '{\"k\": null}', 'ok', 5,
            '0', '192.168.1.1', '0');
         INSERT INTO t (id, n) SELECT 5, (repeat('9', 500) || '.' || repeat('1', 300))::numeric;",
    )
    .unwrap();
    let rows = Decoded::get(&mut c, "s", &[("format_version", "1")]).rows();
    assert_eq!(rows.len(), 5);

    // Expected values, computed by the server from the stored rows.
    let expected = c
        .query(
            &format!(
                "SELECT id, b, i2::int8, i4::int8, i8, f4::text, f8::text, n::text, tx, vc, bpcharout(ch)::text, nm::text,
                        by, CASE WHEN d IS NULL THEN NULL WHEN d = '-infinity' THEN -2147483648
                                 WHEN d = 'infinity' THEN 2147483647 ELSE d - {PG_EPOCH_DAYS_SQL} END,
                        (extract(epoch FROM tm) * 1000000)::int8,
                        CASE WHEN ts = '-infinity' THEN -9223372036854775808 WHEN ts = 'infinity' THEN 9223372036854775807
                             ELSE (extract(epoch FROM ts - timestamp '2000-01-01') * 1000000)::int8 END,
                        CASE WHEN tz = '-infinity' THEN -9223372036854775808 WHEN tz = 'infinity' THEN 9223372036854775807
                             ELSE (extract(epoch FROM tz - timestamptz '2000-01-01 00:00:00+00') * 1000000)::int8 END,
                        u::text, j::text, jb::text, e::text, dom::int8, interval_out(iv)::text, inet_out(ip)::text, m::numeric::text
                 FROM t ORDER BY id"
            ),
            &[],
        )
        .unwrap();
    for (row, exp) in rows.iter().zip(&expected) {
        let v = row.new.as_ref().unwrap();
        let id: i32 = exp.get(0);
        let ctx = |col: &str| format!("row {id} column {col}");
        let opt_bool: Option<bool> = exp.get(1);
        assert_eq!(
            v[1],
            opt_bool.map_or(Value::Null, Value::Bool),
            "{}",
            ctx("b")
        );
        for (i, col) in [(2, "i2"), (3, "i4"), (4, "i8")] {
            let e: Option<i64> = exp.get(i);
            assert_eq!(v[i], e.map_or(Value::Null, Value::Int), "{}", ctx(col));
        }
        let f4: Option<String> = exp.get(5);
        match (&v[5], f4) {
            (Value::Float4(f), Some(t)) => assert_eq!(
                f.to_bits(),
                parse_pg_float::<f32>(&t).to_bits(),
                "{}",
                ctx("f4")
            ),
            (Value::Null, None) => {}
            other => panic!("{}: {other:?}", ctx("f4")),
        }
        let f8: Option<String> = exp.get(6);
        match (&v[6], f8) {
            (Value::Float8(f), Some(t)) => assert_eq!(
                f.to_bits(),
                parse_pg_float::<f64>(&t).to_bits(),
                "{}",
                ctx("f8")
            ),
            (Value::Null, None) => {}
            other => panic!("{}: {other:?}", ctx("f8")),
        }
        let n: Option<String> = exp.get(7);
        assert_eq!(v[7], n.map_or(Value::Null, Value::Numeric), "{}", ctx("n"));
        for (i, col) in [(8, "tx"), (9, "vc"), (10, "ch"), (11, "nm")] {
            let e: Option<String> = exp.get(i);
            let got = match &v[i] {
                Value::Text(s) => Some(s.to_string()),
                Value::Null => None,
                other => panic!("{}: {other:?}", ctx(col)),
            };
            assert_eq!(got, e, "{}", ctx(col));
        }
        let by: Option<Vec<u8>> = exp.get(12);
        assert_eq!(
            v[12],
            by.as_deref()
                .map_or(Value::Null, |b| Value::Bytes(Box::leak(
                    b.to_vec().into_boxed_slice()
                ))),
            "{}",
            ctx("by")
        );
        let d: Option<i32> = exp.get(13);
        assert_eq!(v[13], d.map_or(Value::Null, Value::Date), "{}", ctx("d"));
        let tm: Option<i64> = exp.get(14);
        assert_eq!(v[14], tm.map_or(Value::Null, Value::Time), "{}", ctx("tm"));
        let ts: Option<i64> = exp.get(15);
        assert_eq!(
            v[15],
            ts.map_or(Value::Null, Value::Timestamp),
            "{}",
            ctx("ts")
        );
        let tz: Option<i64> = exp.get(16);
        assert_eq!(
            v[16],
            tz.map_or(Value::Null, Value::Timestamptz),
            "{}",
            ctx("tz")
        );
        let u: Option<String> = exp.get(17);
        assert_eq!(
            v[17],
            u.map_or(Value::Null, |s| Value::Uuid(uuid_bytes(&s))),
            "{}",
            ctx("u")
        );
        for (i, col) in [(18, "j"), (19, "jb")] {
            let e: Option<String> = exp.get(i);
            assert_eq!(text_of(&v[i], col), e, "{}", ctx(col));
        }
        let e: Option<String> = exp.get(20);
        assert_eq!(text_of(&v[20], "e"), e, "{}", ctx("e"));
        let dom: Option<i64> = exp.get(21);
        assert_eq!(v[21], dom.map_or(Value::Null, Value::Int), "{}", ctx("dom"));
        for (i, col) in [(22, "iv"), (23, "ip")] {
            let e: Option<String> = exp.get(i);
            assert_eq!(text_of(&v[i], col), e, "{}", ctx(col));
        }
        // money: the exact decimal money::numeric gives, never the locale's text.
        let m: Option<String> = exp.get(24);
        assert_eq!(v[24], m.map_or(Value::Null, Value::Numeric), "{}", ctx("m"));
    }
    // Dates and timestamps before the epoch and BC are negative, infinities are the extremes.
    let row2 = rows[1].new.as_ref().unwrap();
    assert!(matches!(row2[13], Value::Date(d) if d < -700_000));
    assert_eq!(rows[0].new.as_ref().unwrap()[13], Value::Date(i32::MIN));
    // An empty string is not NULL; a char(3) keeps its padding.
    assert_eq!(rows[0].new.as_ref().unwrap()[8], Value::Text(""));
    assert_eq!(rows[0].new.as_ref().unwrap()[10], Value::Text("ab "));
    // 800 significant digits survive.
    assert!(matches!(&rows[4].new.as_ref().unwrap()[7], Value::Numeric(s) if s.len() == 801));
}

fn text_of(v: &Value<'_>, col: &str) -> Option<String> {
    match v {
        Value::Json(s) | Value::Enum(s) | Value::Other(s) | Value::Text(s) => Some(s.to_string()),
        Value::Null => None,
        other => panic!("column {col}: unexpected {other:?}"),
    }
}

fn parse_pg_float<F: std::str::FromStr>(t: &str) -> F
where
    F::Err: std::fmt::Debug,
{
    // PostgreSQL prints the shortest text that reads back exactly; Rust reads "Infinity" and "NaN" too.
    t.parse::<F>().unwrap()
}

fn uuid_bytes(s: &str) -> [u8; 16] {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

#[test]
fn arrays_keep_dimensions_bounds_and_nulls() {
    let (_pg, mut c) = server_with_slot("s");
    c.batch_execute(
        "CREATE TYPE mood AS ENUM ('sad', 'ok');
         CREATE TABLE a (id int PRIMARY KEY, ints int[], texts text[], nums numeric[], moods mood[], ts timestamptz[]);
         INSERT INTO a VALUES
           (1, '[-2:0]={1,2,3}', '{{a,NULL},{\"\",\"d e\"}}', '{1.50,NaN,-Infinity}', '{ok,sad}', '{infinity}'),
           (2, '{}', '{}', NULL, '{}', '{}'),
           (3, '[5:5][1:2][0:0]={{{7},{8}}}', ARRAY[NULL]::text[], '{0}', NULL, ARRAY['2000-01-01 00:00:01+00']::timestamptz[]);",
    )
    .unwrap();
    let rows = Decoded::get(&mut c, "s", &[]).rows();
    let arr = |r: usize, col: usize| match &rows[r].new.as_ref().unwrap()[col] {
        Value::Array(a) => a.clone(),
        other => panic!("row {r} column {col}: {other:?}"),
    };
    let a = arr(0, 1);
    assert_eq!(a.dims, vec![(-2, 3)]);
    assert_eq!(
        a.elements,
        vec![Value::Int(1), Value::Int(2), Value::Int(3)]
    );
    let t = arr(0, 2);
    assert_eq!(t.dims, vec![(1, 2), (1, 2)]);
    assert_eq!(
        t.elements,
        vec![
            Value::Text("a"),
            Value::Null,
            Value::Text(""),
            Value::Text("d e")
        ]
    );
    assert_eq!(
        arr(0, 3).elements,
        vec![
            Value::Numeric("1.50".into()),
            Value::Numeric("NaN".into()),
            Value::Numeric("-Infinity".into())
        ]
    );
    assert_eq!(
        arr(0, 4).elements,
        vec![Value::Enum("ok"), Value::Enum("sad")]
    );
    assert_eq!(arr(0, 5).elements, vec![Value::Timestamptz(i64::MAX)]);
    let empty = arr(1, 1);
    assert!(empty.dims.is_empty() && empty.elements.is_empty());
    assert_eq!(rows[1].new.as_ref().unwrap()[3], Value::Null);
    let three = arr(2, 1);
    assert_eq!(three.dims, vec![(5, 1), (1, 2), (0, 1)]);
    assert_eq!(three.elements, vec![Value::Int(7), Value::Int(8)]);
    assert_eq!(arr(2, 2).elements, vec![Value::Null]);
    assert_eq!(arr(2, 5).elements, vec![Value::Timestamptz(1_000_000)]);
}

/// What a column's values are made of, for printing a decoded value as PostgreSQL prints it.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// An integer (int2, int4) or an oid (kind Other: its text).
    Scalar,
    /// `int2vector` / `oidvector`: one dimension from 0, printed space-separated.
    Vector,
    /// An array (`array_out`) whose elements have the inner shape.
    Array(&'static Shape),
}

/// A decoded value printed as PostgreSQL's output function prints it: `array_out` with its
/// `[lower:upper]=` decoration where a lower bound is not 1 and its quoting, `int2vectorout`.
fn pg_text(v: &Value<'_>, shape: Shape) -> String {
    match (shape, v) {
        (Shape::Scalar, Value::Int(i)) => i.to_string(),
        (Shape::Scalar, Value::Other(s)) => s.to_string(),
        (Shape::Vector, Value::Array(a)) => {
            assert_eq!(a.dims.len(), 1, "a vector has one dimension: {a:?}");
            assert_eq!(a.dims[0], (0, a.elements.len() as i32), "{a:?}");
            let texts: Vec<String> = a
                .elements
                .iter()
                .map(|e| pg_text(e, Shape::Scalar))
                .collect();
            texts.join(" ")
        }
        (Shape::Array(inner), Value::Array(a)) => {
            if a.elements.is_empty() {
                return "{}".into();
            }
            let mut out = String::new();
            if a.dims.iter().any(|d| d.0 != 1) {
                for &(lo, len) in &a.dims {
                    out.push_str(&format!("[{lo}:{}]", lo + len - 1));
                }
                out.push('=');
            }
            let mut elements = a.elements.iter();
            fn level<'v>(
                out: &mut String,
                lens: &[i32],
                inner: Shape,
                it: &mut impl Iterator<Item = &'v Value<'v>>,
            ) {
                out.push('{');
                for i in 0..lens[0] {
                    if i > 0 {
                        out.push(',');
                    }
                    if lens.len() > 1 {
                        level(out, &lens[1..], inner, it);
                        continue;
                    }
                    match it.next().expect("as many elements as the dimensions say") {
                        Value::Null => out.push_str("NULL"),
                        e => {
                            let t = pg_text(e, inner);
                            let quote = t.is_empty()
                                || t.eq_ignore_ascii_case("NULL")
                                || t.chars().any(|c| "{},\"\\ \t\n\r\x0b\x0c".contains(c));
                            if quote {
                                out.push('"');
                                for ch in t.chars() {
                                    if ch == '"' || ch == '\\' {
                                        out.push('\\');
                                    }
                                    out.push(ch);
                                }
                                out.push('"');
                            } else {
                                out.push_str(&t);
                            }
                        }
                    }
                }
                out.push('}');
            }
            let lens: Vec<i32> = a.dims.iter().map(|d| d.1).collect();
            level(&mut out, &lens, *inner, &mut elements);
            assert!(
                elements.next().is_none(),
                "more elements than the dimensions say"
            );
            out
        }
        (shape, other) => panic!("a {shape:?} value decoded as {other:?}"),
    }
}

#[test]
fn arrays_of_arrays_and_vectors_decode_to_what_postgresql_prints() {
    let (_pg, mut c) = server_with_slot("s");
    c.batch_execute(
        r#"CREATE DOMAIN intlist AS int[];
         CREATE DOMAIN intlists AS intlist[];
         CREATE TABLE n (id int PRIMARY KEY, l intlist[], v int2vector, o oidvector,
                         vs int2vector[], os oidvector[], deep intlists[]);
         INSERT INTO n VALUES
           (1, '{"{1,2}","{}",NULL}', '3 1', '23 25', '{"1 2","",NULL,7}', '{23,"",NULL}',
            ARRAY[ARRAY['{1}', NULL, '[0:0]={-5}']::intlists, NULL, '{}']::intlists[]),
           (2, '[0:1][1:2]={{"{1}","[0:1]={2,3}"},{NULL,"{{4},{5}}"}}', '', '', '{}', '{}', '{}'),
           (3, NULL, NULL, NULL, '[-1:0]={"",""}', ARRAY[NULL]::oidvector[], ARRAY[NULL]::intlists[]),
           (4, '{}', '-32768 32767', '0 4294967295', ARRAY['1 2 3'::int2vector], '{"1 2"}',
            ARRAY['{}'::intlists]);"#,
    )
    .unwrap();
    const INT: Shape = Shape::Scalar;
    const INTS: Shape = Shape::Array(&INT);
    const INTLISTS: Shape = Shape::Array(&INTS);
    const VECTOR: Shape = Shape::Vector;
    // The kinds of the inner arrays' elements, which RELATION does not carry (the receiver gets
    // them from the catalog).
    use fig_format::ValueKind as K;
    let kinds = |c: &fig_format::decode::Column<'_>| match c.name {
        "l" => vec![K::Array, K::Int4],
        "vs" => vec![K::Array, K::Int2],
        "os" => vec![K::Array, K::Other],
        "deep" => vec![K::Array, K::Array, K::Int4],
        _ => vec![c.elem_kind],
    };
    let decoded = Decoded::get(&mut c, "s", &[("format_version", "1")]);
    let rel = decoded.relations()[0].clone();
    let elem: Vec<_> = rel.columns.iter().map(|c| (c.kind, c.elem_kind)).collect();
    assert_eq!(
        elem[1..],
        [
            (K::Array, K::Array),
            (K::Array, K::Int2),
            (K::Array, K::Other),
            (K::Array, K::Array),
            (K::Array, K::Array),
            (K::Array, K::Array),
        ]
    );
    let rows = decoded.rows_with(&kinds);
    let shapes = [
        Shape::Array(&INTS),
        VECTOR,
        VECTOR,
        Shape::Array(&VECTOR),
        Shape::Array(&VECTOR),
        Shape::Array(&INTLISTS),
    ];
    let expected = c
        .query(
            "SELECT id, l::text, v::text, o::text, vs::text, os::text, deep::text FROM n ORDER BY id",
            &[],
        )
        .unwrap();
    assert_eq!(rows.len(), expected.len());
    for (row, exp) in rows.iter().zip(&expected) {
        let v = row.new.as_ref().unwrap();
        let id: i32 = exp.get(0);
        for (i, shape) in shapes.iter().enumerate() {
            let want: Option<String> = exp.get(i + 1);
            let got = match &v[i + 1] {
                Value::Null => None,
                value => Some(pg_text(value, *shape)),
            };
            assert_eq!(got, want, "row {id} column {}", rel.columns[i + 1].name);
        }
    }
    // The empty vectors are one dimension of length 0, as FORMAT.md says.
    let Value::Array(empty) = &rows[1].new.as_ref().unwrap()[2] else {
        panic!("{:?}", rows[1])
    };
    assert_eq!(
        (empty.dims.as_slice(), empty.elements.len()),
        (&[(0, 0)][..], 0)
    );
}

#[test]
fn unchanged_toast_is_a_marker_next_to_changed_values() {
    let (_pg, mut c) = server_with_slot("s");
    c.batch_execute(
        "CREATE TABLE docs (id int PRIMARY KEY, big text, small int, big2 bytea);
         ALTER TABLE docs ALTER COLUMN big SET STORAGE EXTERNAL, ALTER COLUMN big2 SET STORAGE EXTERNAL;
         INSERT INTO docs SELECT 1, string_agg(md5(i::text), ''), 1, decode(string_agg(md5(i::text), ''), 'hex')
           FROM generate_series(1, 400) i;",
    )
    .unwrap();
    let _ = Decoded::get(&mut c, "s", &[]);
    c.batch_execute(
        "UPDATE docs SET small = 2;
         UPDATE docs SET big = big || 'x', small = 3;",
    )
    .unwrap();
    let big: String = c.query_one("SELECT big FROM docs", &[]).unwrap().get(0);
    let rows = Decoded::get(&mut c, "s", &[]).rows();
    assert_eq!(rows.len(), 2);
    let first = rows[0].new.as_ref().unwrap();
    assert_eq!(first[1], Value::UnchangedToast);
    assert_eq!(first[2], Value::Int(2));
    assert_eq!(first[3], Value::UnchangedToast);
    let second = rows[1].new.as_ref().unwrap();
    assert_eq!(second[1], Value::Text(Box::leak(big.into_boxed_str())));
    assert_eq!(second[2], Value::Int(3));
    assert_eq!(second[3], Value::UnchangedToast);
}

#[test]
fn dropped_columns_never_appear_and_generated_columns_are_opt_in() {
    let (_pg, mut c) = server_with_slot("s");
    c.batch_execute(
        "CREATE TABLE g (id int PRIMARY KEY, gone text, price numeric, total numeric GENERATED ALWAYS AS (price * 2) STORED);
         ALTER TABLE g DROP COLUMN gone;
         INSERT INTO g (id, price) VALUES (1, 2.5);",
    )
    .unwrap();
    let d = Decoded::get(&mut c, "s", &[("skip_empty_xacts", "true")]);
    let names: Vec<&str> = d
        .relations()
        .last()
        .unwrap()
        .columns
        .iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, vec!["id", "price"]);
    assert_eq!(
        d.rows()[0].new.as_ref().unwrap(),
        &vec![Value::Int(1), Value::Numeric("2.5".into())]
    );

    c.batch_execute("INSERT INTO g (id, price) VALUES (2, 1.25)")
        .unwrap();
    let d = Decoded::get(&mut c, "s", &[("include_generated", "true")]);
    let rel = *d.relations().last().unwrap();
    let names: Vec<&str> = rel.columns.iter().map(|c| c.name).collect();
    assert_eq!(names, vec!["id", "price", "total"]);
    assert!(rel.columns[2].flags.generated());
    assert_eq!(
        d.rows()[0].new.as_ref().unwrap()[2],
        Value::Numeric("2.50".into())
    );
}

#[test]
fn text_and_names_from_a_latin1_database_arrive_as_utf8() {
    let pg = fig_tests::PgServer::start();
    pg.psql(
        "CREATE DATABASE latin TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'",
    );
    let mut c = pg.connect_to("latin");
    c.execute(
        "SELECT pg_create_logical_replication_slot('s', 'figoutput')",
        &[],
    )
    .unwrap();
    c.batch_execute(
        "CREATE EXTENSION figoutput;
         CREATE TABLE café (id int PRIMARY KEY, name text, tags text[], naïve bool);
         INSERT INTO café VALUES (1, 'Zoë Ångström', '{café}', true);",
    )
    .unwrap();
    let decoded = Decoded::get(&mut c, "s", &[]);
    // Names leave as UTF-8 too.
    let rel = decoded.relations()[0];
    assert_eq!(rel.table, "café");
    assert_eq!(rel.columns[3].name, "naïve");
    let rows = decoded.rows();
    let v = rows[0].new.as_ref().unwrap();
    assert_eq!(v[1], Value::Text("Zoë Ångström"));
    match &v[2] {
        Value::Array(a) => assert_eq!(a.elements, vec![Value::Text("café")]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn numerics_decode_to_exactly_what_numeric_out_prints() {
    let (_pg, mut c) = server_with_slot("s");
    c.batch_execute(
        "CREATE TABLE n (id serial PRIMARY KEY, v numeric, fixed numeric(20,5));
         INSERT INTO n (v, fixed)
         SELECT round(((random() - 0.5) * 10 ^ (floor(random() * 60) - 30))::numeric, floor(random() * 40)::int),
                round(((random() - 0.5) * 10 ^ floor(random() * 14))::numeric, 5)
         FROM generate_series(1, 5000);
         INSERT INTO n (v, fixed) VALUES
           (0, 0), (-0.0, -0.00001), (0.000000000000000000000000000001, 99999999999999.99999),
           (10 ^ 100, -1), (-123456789012345678901234567890.123456789, 0.1), ('NaN', 'NaN'),
           ('Infinity', 12.3), ('-Infinity', -12.3), (1e-6, 1e-5), (100000000, 10000);",
    )
    .unwrap();
    let rows = Decoded::get(&mut c, "s", &[]).rows();
    let expected = c
        .query("SELECT v::text, fixed::text FROM n ORDER BY id", &[])
        .unwrap();
    assert_eq!(rows.len(), expected.len());
    for (row, exp) in rows.iter().zip(&expected) {
        let v = row.new.as_ref().unwrap();
        let (e1, e2): (String, String) = (exp.get(0), exp.get(1));
        assert_eq!(v[1], Value::Numeric(e1));
        assert_eq!(v[2], Value::Numeric(e2));
    }
}
