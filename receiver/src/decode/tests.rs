//! Both decoders against each other: one random value of each type, sent once as figoutput would
//! (a fig_format record built with `fig_format::encode::Writer`) and once as pgoutput would (the
//! value printed as PostgreSQL's output function prints it, inside an Insert message), must decode
//! to identical events. Plus hostile figoutput input: random, truncated, mutated, huge lengths.

use super::pgoutput::tests::{insert_msg, relation_msg, Col};
use super::types::format_builtin_type;
use super::*;
use crate::model::{Event, Incoming, Value};
use fig_format::datetime::civil_from_days;
use fig_format::encode::{ColumnOut, Writer};
use fig_format::{ReplicaIdentity, ValueKind};
use proptest::prelude::*;

/// The column types under test: (scalar OID, array OID, figoutput kind).
#[derive(Debug, Clone, Copy, PartialEq)]
enum T {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    Text,
    Varchar,
    Bpchar,
    Name,
    Bytea,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Uuid,
    Json,
    Jsonb,
    Enum,
    Other,
}

const ALL: [T; 21] = [
    T::Bool,
    T::Int2,
    T::Int4,
    T::Int8,
    T::Float4,
    T::Float8,
    T::Numeric,
    T::Text,
    T::Varchar,
    T::Bpchar,
    T::Name,
    T::Bytea,
    T::Date,
    T::Time,
    T::Timestamp,
    T::Timestamptz,
    T::Uuid,
    T::Json,
    T::Jsonb,
    T::Enum,
    T::Other,
];

const MOOD: u32 = 16_385;
const MOOD_ARRAY: u32 = 16_384;

impl T {
    fn oids(self) -> (u32, u32) {
        match self {
            T::Bool => (16, 1000),
            T::Int2 => (21, 1005),
            T::Int4 => (23, 1007),
            T::Int8 => (20, 1016),
            T::Float4 => (700, 1021),
            T::Float8 => (701, 1022),
            T::Numeric => (1700, 1231),
            T::Text => (25, 1009),
            T::Varchar => (1043, 1015),
            T::Bpchar => (1042, 1014),
            T::Name => (19, 1003),
            T::Bytea => (17, 1001),
            T::Date => (1082, 1182),
            T::Time => (1083, 1183),
            T::Timestamp => (1114, 1115),
            T::Timestamptz => (1184, 1185),
            T::Uuid => (2950, 2951),
            T::Json => (114, 199),
            T::Jsonb => (3802, 3807),
            T::Enum => (MOOD, MOOD_ARRAY),
            // interval: a built-in without a native encoding.
            T::Other => (1186, 1187),
        }
    }
    fn kind(self) -> ValueKind {
        use ValueKind as K;
        match self {
            T::Bool => K::Bool,
            T::Int2 => K::Int2,
            T::Int4 => K::Int4,
            T::Int8 => K::Int8,
            T::Float4 => K::Float4,
            T::Float8 => K::Float8,
            T::Numeric => K::Numeric,
            T::Text | T::Varchar | T::Bpchar | T::Name => K::Text,
            T::Bytea => K::Bytea,
            T::Date => K::Date,
            T::Time => K::Time,
            T::Timestamp => K::Timestamp,
            T::Timestamptz => K::Timestamptz,
            T::Uuid => K::Uuid,
            T::Json => K::Json,
            T::Jsonb => K::Jsonb,
            T::Enum => K::Enum,
            T::Other => K::Other,
        }
    }
}

fn registry() -> TypeRegistry {
    let row = |oid, name: &str, typtype, typelem, typcategory| TypeRow {
        oid,
        name: name.into(),
        typtype,
        typelem,
        typbasetype: 0,
        typcategory,
        typdelim: b',',
    };
    TypeRegistry::from_rows([
        row(MOOD, "mood", b'e', 0, b'E'),
        row(MOOD_ARRAY, "mood[]", b'b', MOOD, b'A'),
        // CREATE DOMAIN intlist AS integer[]: a domain over integer[], and its array type.
        TypeRow {
            typbasetype: 1007,
            ..row(INTLIST, "intlist", b'd', 0, b'A')
        },
        row(INTLIST_ARRAY, "intlist[]", b'b', INTLIST, b'A'),
    ])
}

const INTLIST: u32 = 16_387;
const INTLIST_ARRAY: u32 = 16_386;

/// A scalar as the test generates it; printed per type by [`pg_text_of`] and [`fig_write`].
#[derive(Debug, Clone)]
enum S {
    Bool(bool),
    Int(i64),
    /// The value and whether to print it in exponent form.
    F4(f32, bool),
    F8(f64, bool),
    Str(String),
    Bytes(Vec<u8>),
    Days(i32),
    Usecs(i64),
    /// UTC microseconds and the session's UTC offset in seconds (east positive).
    Tz(i64, i32),
    /// The bytes and whether the server printed upper case.
    Uuid([u8; 16], bool),
}

#[derive(Debug, Clone)]
enum Cell {
    Null,
    Toast,
    Scalar(S),
    Array(Vec<(i32, i32)>, Vec<Option<S>>),
}

/// PostgreSQL's range of timestamps: 4714-11-24 BC to 294276-12-31.
const MIN_TIMESTAMP: i64 = -211_813_488_000_000_000;
const END_TIMESTAMP: i64 = 9_223_371_331_200_000_000;

fn scalar(t: T) -> BoxedStrategy<S> {
    match t {
        T::Bool => any::<bool>().prop_map(S::Bool).boxed(),
        T::Int2 => any::<i16>().prop_map(|i| S::Int(i.into())).boxed(),
        T::Int4 => any::<i32>().prop_map(|i| S::Int(i.into())).boxed(),
        T::Int8 => any::<i64>().prop_map(S::Int).boxed(),
        T::Float4 => (any::<f32>(), any::<bool>())
            .prop_map(|(f, e)| S::F4(f, e))
            .boxed(),
        T::Float8 => (any::<f64>(), any::<bool>())
            .prop_map(|(f, e)| S::F8(f, e))
            .boxed(),
        T::Numeric => prop_oneof![
            Just("NaN".to_owned()),
            Just("Infinity".to_owned()),
            Just("-Infinity".to_owned()),
            "-?[0-9]{1,300}(\\.[0-9]{1,300})?",
        ]
        .prop_map(S::Str)
        .boxed(),
        T::Text | T::Varchar | T::Bpchar | T::Name | T::Other => {
            "[^\\x00]{0,24}".prop_map(S::Str).boxed()
        }
        T::Json | T::Jsonb => "[ -~]{0,24}".prop_map(S::Str).boxed(),
        T::Enum => "[a-zA-Z _]{1,12}".prop_map(S::Str).boxed(),
        T::Bytea => proptest::collection::vec(any::<u8>(), 0..32)
            .prop_map(S::Bytes)
            .boxed(),
        T::Date => prop_oneof![
            Just(i32::MIN),
            Just(i32::MAX),
            -2_451_545i32..=2_145_031_948,
            -800_000i32..80_000,
        ]
        .prop_map(S::Days)
        .boxed(),
        T::Time => prop_oneof![
            0i64..=86_400_000_000,
            (0i64..=86_400).prop_map(|s| s * 1_000_000)
        ]
        .prop_map(S::Usecs)
        .boxed(),
        T::Timestamp => timestamp().prop_map(S::Usecs).boxed(),
        T::Timestamptz => (
            timestamp(),
            prop_oneof![
                Just(0i32),
                -57_599i32..=57_599,
                (-15i32..=15).prop_map(|h| h * 1800)
            ],
        )
            .prop_map(|(t, off)| S::Tz(t, off))
            .boxed(),
        T::Uuid => (any::<[u8; 16]>(), any::<bool>())
            .prop_map(|(u, up)| S::Uuid(u, up))
            .boxed(),
    }
}

fn timestamp() -> BoxedStrategy<i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        MIN_TIMESTAMP..END_TIMESTAMP,
        // Around 2000 and around year 1, where eras change.
        -1_000_000_000_000_000i64..1_000_000_000_000_000,
        -63_200_000_000_000_000i64..-63_000_000_000_000_000,
    ]
    .boxed()
}

fn cell(t: T) -> BoxedStrategy<Cell> {
    let array =
        proptest::collection::vec((-3i32..=3, 1i32..=3), 0..=3).prop_flat_map(move |dims| {
            let n = dims.iter().map(|d| d.1 as usize).product::<usize>()
                * usize::from(!dims.is_empty());
            (
                Just(dims),
                proptest::collection::vec(proptest::option::weighted(0.8, scalar(t)), n),
            )
        });
    prop_oneof![
        1 => Just(Cell::Null),
        1 => Just(Cell::Toast),
        6 => scalar(t).prop_map(Cell::Scalar),
        4 => array.prop_map(|(d, e)| Cell::Array(d, e)),
    ]
    .boxed()
}

// ---- PostgreSQL's text output, as the replication session gets it ------------------------------

fn pg_float(s: String, exponent: bool) -> String {
    match s.as_str() {
        "NaN" | "inf" | "-inf" => unreachable!(),
        _ if exponent && !s.contains("e-") => s.replace('e', "e+"),
        _ => s,
    }
}

fn pg_date_part(days: i64) -> (String, bool) {
    let (y, m, d) = civil_from_days(days);
    if y <= 0 {
        (format!("{:04}-{m:02}-{d:02}", 1 - y), true)
    } else {
        (format!("{y:04}-{m:02}-{d:02}"), false)
    }
}

fn pg_time(usecs: i64) -> String {
    let secs = usecs / 1_000_000;
    let frac = usecs % 1_000_000;
    let mut s = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    if frac != 0 {
        let f = format!(".{frac:06}");
        s.push_str(f.trim_end_matches('0'));
    }
    s
}

fn pg_timestamp(usecs: i64, offset: Option<i32>) -> String {
    match usecs {
        i64::MIN => return "-infinity".into(),
        i64::MAX => return "infinity".into(),
        _ => {}
    }
    const DAY: i64 = 86_400_000_000;
    let local = usecs + i64::from(offset.unwrap_or(0)) * 1_000_000;
    let (date, bc) = pg_date_part(local.div_euclid(DAY));
    let mut s = format!("{date} {}", pg_time(local.rem_euclid(DAY)));
    if let Some(off) = offset {
        let a = off.abs();
        s.push(if off >= 0 { '+' } else { '-' });
        s.push_str(&format!("{:02}", a / 3600));
        if a % 3600 != 0 {
            s.push_str(&format!(":{:02}", a / 60 % 60));
            if a % 60 != 0 {
                s.push_str(&format!(":{:02}", a % 60));
            }
        }
    }
    if bc {
        s.push_str(" BC");
    }
    s
}

fn pg_text_of(s: &S) -> String {
    match s {
        S::Bool(b) => if *b { "t" } else { "f" }.into(),
        S::Int(i) => i.to_string(),
        S::F4(f, e) if f.is_finite() => {
            pg_float(if *e { format!("{f:e}") } else { f.to_string() }, *e)
        }
        S::F8(f, e) if f.is_finite() => {
            pg_float(if *e { format!("{f:e}") } else { f.to_string() }, *e)
        }
        S::F4(f, _) => special(f64::from(*f)),
        S::F8(f, _) => special(*f),
        S::Str(s) => s.clone(),
        S::Bytes(b) => {
            let mut s = "\\x".to_owned();
            for x in b {
                s.push_str(&format!("{x:02x}"));
            }
            s
        }
        S::Days(i32::MIN) => "-infinity".into(),
        S::Days(i32::MAX) => "infinity".into(),
        S::Days(d) => {
            let (date, bc) = pg_date_part((*d).into());
            if bc {
                date + " BC"
            } else {
                date
            }
        }
        S::Usecs(u) => unreachable!("time or timestamp is printed by its type: {u}"),
        S::Tz(t, off) => pg_timestamp(*t, Some(*off)),
        S::Uuid(u, upper) => {
            let s = uuid_text(u);
            if *upper {
                s.to_uppercase()
            } else {
                s
            }
        }
    }
}

fn special(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f > 0.0 {
        "Infinity".into()
    } else {
        "-Infinity".into()
    }
}

fn pg_scalar(t: T, s: &S) -> String {
    match (t, s) {
        (T::Time, S::Usecs(u)) => pg_time(*u),
        (T::Timestamp, S::Usecs(u)) => pg_timestamp(*u, None),
        _ => pg_text_of(s),
    }
}

/// `array_out`.
fn pg_array(t: T, dims: &[(i32, i32)], elements: &[Option<S>]) -> String {
    let texts: Vec<Option<String>> = elements
        .iter()
        .map(|e| e.as_ref().map(|s| pg_scalar(t, s)))
        .collect();
    pg_array_of(dims, &texts)
}

/// `array_out` of elements already printed by their type's output function.
fn pg_array_of(dims: &[(i32, i32)], elements: &[Option<String>]) -> String {
    if dims.is_empty() {
        return "{}".into();
    }
    let mut out = String::new();
    if dims.iter().any(|d| d.0 != 1) {
        for &(lo, len) in dims {
            out.push_str(&format!("[{lo}:{}]", lo + len - 1));
        }
        out.push('=');
    }
    let mut it = elements.iter();
    fn level(out: &mut String, lens: &[i32], it: &mut std::slice::Iter<'_, Option<String>>) {
        out.push('{');
        for i in 0..lens[0] {
            if i > 0 {
                out.push(',');
            }
            if lens.len() > 1 {
                level(out, &lens[1..], it);
                continue;
            }
            match it.next().unwrap() {
                None => out.push_str("NULL"),
                Some(text) => {
                    let quote = text.is_empty()
                        || text.eq_ignore_ascii_case("NULL")
                        || text.chars().any(|c| {
                            matches!(
                                c,
                                '{' | '}'
                                    | '"'
                                    | '\\'
                                    | ','
                                    | ' '
                                    | '\t'
                                    | '\n'
                                    | '\r'
                                    | '\x0b'
                                    | '\x0c'
                            )
                        });
                    if quote {
                        out.push('"');
                        for c in text.chars() {
                            if c == '"' || c == '\\' {
                                out.push('\\');
                            }
                            out.push(c);
                        }
                        out.push('"');
                    } else {
                        out.push_str(text);
                    }
                }
            }
        }
        out.push('}');
    }
    let lens: Vec<i32> = dims.iter().map(|d| d.1).collect();
    level(&mut out, &lens, &mut it);
    out
}

// ---- figoutput's encoding ----------------------------------------------------------------------

fn fig_write(w: &mut Writer<'_>, t: T, s: &S) {
    match s {
        S::Bool(b) => w.bool(*b),
        S::Int(i) => w.int(*i),
        S::F4(f, _) => w.f32(*f),
        S::F8(f, _) => w.f64(*f),
        S::Str(text) if t == T::Numeric => w.decimal_text(text.as_bytes()).unwrap(),
        S::Str(text) => w.str(text),
        S::Bytes(b) => w.bin(b),
        S::Days(d) => w.int((*d).into()),
        S::Usecs(u) | S::Tz(u, _) => w.int(*u),
        S::Uuid(u, _) => w.bin(u),
    }
}

/// The same one-column table and row through both plugins.
fn both(t: T, array: bool, cell: &Cell) -> (Vec<Event>, Vec<Event>) {
    let (oid, array_oid) = t.oids();
    let oid = if array { array_oid } else { oid };
    let reg = registry();
    let type_name =
        format_builtin_type(oid, -1).unwrap_or_else(|| reg.resolve(oid, -1).unwrap().name);
    let (kind, elem) = if array {
        (ValueKind::Array, t.kind())
    } else {
        (t.kind(), ValueKind::Other)
    };

    let write = |w: &mut Writer<'_>| match cell {
        Cell::Null => w.nil(),
        Cell::Toast => w.unchanged_toast(),
        Cell::Scalar(s) => fig_write(w, t, s),
        Cell::Array(dims, elements) => {
            w.array_value_header(dims, elements.len() as u32);
            for e in elements {
                match e {
                    None => w.nil(),
                    Some(s) => fig_write(w, t, s),
                }
            }
        }
    };
    let text = match cell {
        Cell::Null | Cell::Toast => String::new(),
        Cell::Scalar(s) => pg_scalar(t, s),
        Cell::Array(dims, elements) => pg_array(t, dims, elements),
    };
    let col = match cell {
        Cell::Null => Col::Null,
        Cell::Toast => Col::Toast,
        _ => Col::Text(text.as_bytes()),
    };
    both_raw(oid, &type_name, (kind, elem), &write, col)
}

/// A one-column table of type `oid` and one INSERT through both plugins: figoutput's RELATION
/// with `kinds` (kind, elem_kind) and the value `write` writes, pgoutput's with the column `col`.
fn both_raw(
    oid: u32,
    type_name: &str,
    (kind, elem): (ValueKind, ValueKind),
    write: &dyn Fn(&mut Writer<'_>),
    col: Col<'_>,
) -> (Vec<Event>, Vec<Event>) {
    let reg = registry();
    let mut fig = Vec::new();
    let mut w = Writer::new(&mut fig);
    w.relation_header(42, b"public", b"t", ReplicaIdentity::Default, 1);
    w.column(&ColumnOut {
        attnum: 1,
        name: b"c",
        type_oid: oid,
        typmod: -1,
        type_name: type_name.as_bytes(),
        flags: 0,
        kind,
        elem_kind: elem,
    });
    w.insert_header(42, false);
    w.tuple_header(1);
    write(&mut w);
    let mut fs = FigState::new();
    let from_fig = figoutput::decode(&fig, &mut fs, &reg).expect("figoutput decodes");

    let mut ps = PgState::new(1).unwrap();
    let mut from_pg = pgoutput::decode(
        &relation_msg(42, "public", "t", &[(0, "c", oid, -1)], None),
        &mut ps,
        &reg,
    )
    .expect("pgoutput RELATION decodes");
    let row = pgoutput::decode(&insert_msg(42, &[col], None), &mut ps, &reg)
        .unwrap_or_else(|e| panic!("pgoutput rejected {col:?}: {e}"));
    from_pg.extend(row);
    (from_fig, from_pg)
}

/// Equality where NaN equals NaN (payloads and signs of NaN are not data) and 0.0 differs from -0.0.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => {
            (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits()
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b))
        }
        _ => a == b,
    }
}

fn same_events(a: &[Event], b: &[Event]) -> bool {
    let row = |r: &Option<Vec<Incoming>>, s: &Option<Vec<Incoming>>| match (r, s) {
        (None, None) => true,
        (Some(r), Some(s)) => {
            r.len() == s.len()
                && r.iter().zip(s).all(|(x, y)| match (x, y) {
                    (Incoming::Value(x), Incoming::Value(y)) => same_value(x, y),
                    _ => x == y,
                })
        }
        _ => false,
    };
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| match (x, y) {
            (
                Event::Row {
                    xid,
                    op,
                    relid,
                    before,
                    after,
                },
                Event::Row {
                    xid: xid2,
                    op: op2,
                    relid: relid2,
                    before: before2,
                    after: after2,
                },
            ) => {
                xid == xid2
                    && op == op2
                    && relid == relid2
                    && row(before, before2)
                    && row(after, after2)
            }
            // pgoutput does not send attnums; everything else of a relation must agree.
            (Event::Relation(r), Event::Relation(s)) => {
                let strip = |r: &crate::model::Relation| {
                    let mut r = r.clone();
                    r.columns.iter_mut().for_each(|c| c.attnum = None);
                    r
                };
                strip(r) == strip(s)
            }
            _ => x == y,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn both_plugins_yield_identical_values(
        (t, c) in proptest::sample::select(ALL.to_vec()).prop_flat_map(|t| (Just(t), cell(t)))
    ) {
        let array = matches!(c, Cell::Array(..));
        let (fig, pg) = both(t, array, &c);
        prop_assert!(same_events(&fig, &pg), "figoutput {:?}\npgoutput  {:?}", fig, pg);
    }
}

#[test]
fn both_plugins_agree_on_edge_values() {
    let cases: Vec<(T, Cell)> = vec![
        (T::Date, Cell::Scalar(S::Days(-746_117))), // 0044-03-15 BC
        (T::Date, Cell::Scalar(S::Days(-730_120))), // 0001-12-31 BC = year 0
        (T::Date, Cell::Scalar(S::Days(2_145_031_948))),
        (T::Time, Cell::Scalar(S::Usecs(86_400_000_000))),
        (T::Timestamptz, Cell::Scalar(S::Tz(MIN_TIMESTAMP, 0))),
        (T::Timestamptz, Cell::Scalar(S::Tz(END_TIMESTAMP - 1, 0))),
        (
            T::Timestamp,
            Cell::Scalar(S::Usecs(-63_082_281_600_000_001)),
        ),
        (T::Float4, Cell::Scalar(S::F4(f32::from_bits(1), true))),
        (T::Float4, Cell::Scalar(S::F4(f32::MAX, false))),
        (T::Float4, Cell::Scalar(S::F4(-0.0, false))),
        (T::Float8, Cell::Scalar(S::F8(f64::NAN, false))),
        (T::Float8, Cell::Scalar(S::F8(f64::NEG_INFINITY, false))),
        (
            T::Numeric,
            Cell::Scalar(S::Str(format!("{}.{}", "1".repeat(500), "2".repeat(500)))),
        ),
        (
            T::Text,
            Cell::Array(
                vec![(1, 2), (0, 2)],
                vec![
                    Some(S::Str("a\"b".into())),
                    None,
                    Some(S::Str("NULL".into())),
                    Some(S::Str("c\\d {}".into())),
                ],
            ),
        ),
        (T::Enum, Cell::Array(vec![], vec![])),
        (
            T::Timestamptz,
            Cell::Array(vec![(1, 1)], vec![Some(S::Tz(0, 19_800))]),
        ),
    ];
    for (t, c) in cases {
        let array = matches!(c, Cell::Array(..));
        let (fig, pg) = both(t, array, &c);
        assert!(
            same_events(&fig, &pg),
            "{t:?} {c:?}\nfigoutput {fig:?}\npgoutput  {pg:?}"
        );
    }
}

// ---- arrays whose elements are arrays, and int2vector / oidvector ------------------------------

/// A column type whose values are arrays of arrays or vectors, as the tests build them.
#[derive(Debug, Clone, Copy, PartialEq)]
enum V {
    /// `int2vector`: figoutput kind 18, elem_kind 2.
    Int2Vector,
    /// `oidvector`: kind 18, elem_kind 0 (an oid is its decimal text).
    OidVector,
    /// `intlist[]`, an array of a domain over `integer[]`: kind 18, elem_kind 18, inner Int4.
    IntLists,
    /// `int2vector[]`: kind 18, elem_kind 18, inner Int2.
    Int2Vectors,
    /// `oidvector[]`: kind 18, elem_kind 18, inner Other.
    OidVectors,
}

/// An inner value: the array of a domain over `integer[]` (any dimensions, NULL elements), or a
/// vector (one dimension from 0, no NULLs).
#[derive(Debug, Clone)]
enum Inner {
    Ints(Vec<(i32, i32)>, Vec<Option<i32>>),
    Vector(Vec<u32>),
}

#[derive(Debug, Clone)]
enum NestedCell {
    /// An `int2vector` or `oidvector` value.
    Vector(Vec<u32>),
    /// An array whose elements are `Inner` values.
    Outer(Vec<(i32, i32)>, Vec<Option<Inner>>),
}

impl V {
    fn oid(self) -> u32 {
        match self {
            V::Int2Vector => 22,
            V::OidVector => 30,
            V::IntLists => INTLIST_ARRAY,
            V::Int2Vectors => 1006,
            V::OidVectors => 1013,
        }
    }
    /// figoutput's (kind, elem_kind) of the column, and the kind of the vector's elements.
    fn kinds(self) -> (ValueKind, ValueKind, ValueKind) {
        use ValueKind as K;
        match self {
            V::Int2Vector => (K::Array, K::Int2, K::Int2),
            V::OidVector => (K::Array, K::Other, K::Other),
            V::IntLists => (K::Array, K::Array, K::Int4),
            V::Int2Vectors => (K::Array, K::Array, K::Int2),
            V::OidVectors => (K::Array, K::Array, K::Other),
        }
    }
}

fn dims_and(
    elements: BoxedStrategy<Option<Inner>>,
) -> impl Strategy<Value = (Vec<(i32, i32)>, Vec<Option<Inner>>)> {
    proptest::collection::vec((-3i32..=3, 1i32..=3), 0..=2).prop_flat_map(move |dims| {
        let n =
            dims.iter().map(|d| d.1 as usize).product::<usize>() * usize::from(!dims.is_empty());
        (Just(dims), proptest::collection::vec(elements.clone(), n))
    })
}

fn vector(v: V) -> BoxedStrategy<Vec<u32>> {
    match v {
        V::Int2Vector | V::Int2Vectors => {
            proptest::collection::vec(any::<i16>().prop_map(|i| i as u16 as u32), 0..=4).boxed()
        }
        _ => proptest::collection::vec(any::<u32>(), 0..=4).boxed(),
    }
}

fn nested_cell(v: V) -> BoxedStrategy<NestedCell> {
    let ints = proptest::collection::vec((-3i32..=3, 1i32..=3), 0..=2)
        .prop_flat_map(|dims| {
            let n = dims.iter().map(|d| d.1 as usize).product::<usize>()
                * usize::from(!dims.is_empty());
            (
                Just(dims),
                proptest::collection::vec(proptest::option::weighted(0.8, any::<i32>()), n),
            )
        })
        .prop_map(|(d, e)| Inner::Ints(d, e));
    match v {
        V::Int2Vector | V::OidVector => vector(v).prop_map(NestedCell::Vector).boxed(),
        V::IntLists => dims_and(proptest::option::weighted(0.8, ints).boxed())
            .prop_map(|(d, e)| NestedCell::Outer(d, e))
            .boxed(),
        V::Int2Vectors | V::OidVectors => {
            dims_and(proptest::option::weighted(0.8, vector(v).prop_map(Inner::Vector)).boxed())
                .prop_map(|(d, e)| NestedCell::Outer(d, e))
                .boxed()
        }
    }
}

/// A vector element: an int2 as an int, an oid as its decimal text (kind Other).
fn fig_vector_element(w: &mut Writer<'_>, elem: ValueKind, x: u32) {
    if elem == ValueKind::Int2 {
        w.int((x as u16 as i16).into());
    } else {
        w.str(&x.to_string());
    }
}

fn fig_inner(w: &mut Writer<'_>, elem: ValueKind, inner: &Inner) {
    match inner {
        Inner::Ints(dims, elements) => {
            w.array_value_header(dims, elements.len() as u32);
            for e in elements {
                match e {
                    None => w.nil(),
                    Some(i) => w.int((*i).into()),
                }
            }
        }
        // int2vector and oidvector: always one dimension with lower bound 0, also when empty.
        Inner::Vector(xs) => {
            w.array_value_header(&[(0, xs.len() as i32)], xs.len() as u32);
            for &x in xs {
                fig_vector_element(w, elem, x);
            }
        }
    }
}

/// `int2vectorout` / `oidvectorout`, and `array_out` of the inner arrays.
fn pg_inner(elem: ValueKind, inner: &Inner) -> String {
    match inner {
        Inner::Ints(dims, elements) => {
            let texts: Vec<Option<String>> =
                elements.iter().map(|e| e.map(|i| i.to_string())).collect();
            pg_array_of(dims, &texts)
        }
        Inner::Vector(xs) => xs
            .iter()
            .map(|&x| {
                if elem == ValueKind::Int2 {
                    (x as u16 as i16).to_string()
                } else {
                    x.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

fn both_nested(v: V, cell: &NestedCell) -> (Vec<Event>, Vec<Event>) {
    let (kind, elem, inner_elem) = v.kinds();
    let reg = registry();
    let type_name = reg.resolve(v.oid(), -1).unwrap().name;
    let write = |w: &mut Writer<'_>| match cell {
        NestedCell::Vector(xs) => fig_inner(w, inner_elem, &Inner::Vector(xs.clone())),
        NestedCell::Outer(dims, elements) => {
            w.array_value_header(dims, elements.len() as u32);
            for e in elements {
                match e {
                    None => w.nil(),
                    Some(inner) => fig_inner(w, inner_elem, inner),
                }
            }
        }
    };
    let text = match cell {
        NestedCell::Vector(xs) => pg_inner(inner_elem, &Inner::Vector(xs.clone())),
        NestedCell::Outer(dims, elements) => {
            let texts: Vec<Option<String>> = elements
                .iter()
                .map(|e| e.as_ref().map(|i| pg_inner(inner_elem, i)))
                .collect();
            pg_array_of(dims, &texts)
        }
    };
    both_raw(
        v.oid(),
        &type_name,
        (kind, elem),
        &write,
        Col::Text(text.as_bytes()),
    )
}

/// The normalized form both decoders must produce: one `Value::Array` per inner array (nested by
/// its own dimensions), a `Value::BoundedArray` where a lower bound is not 1, empty arrays and
/// vectors `[]` (a vector's lower bound 0 is its type's).
fn expected_nested(v: V, cell: &NestedCell) -> Value {
    let (_, _, inner_elem) = v.kinds();
    fn nest(lens: &[i32], it: &mut dyn Iterator<Item = Value>) -> Value {
        match lens.split_first() {
            None => it.next().unwrap(),
            Some((&n, rest)) => Value::Array((0..n).map(|_| nest(rest, it)).collect()),
        }
    }
    fn shaped(dims: &[(i32, i32)], elements: Vec<Value>) -> Value {
        if dims.is_empty() {
            return Value::Array(vec![]);
        }
        let lens: Vec<i32> = dims.iter().map(|d| d.1).collect();
        match nest(&lens, &mut elements.into_iter()) {
            Value::Array(elements) if dims.iter().any(|d| d.0 != 1) => {
                Value::bounded(dims.iter().map(|d| d.0).collect(), elements)
            }
            v => v,
        }
    }
    let vector = |xs: &[u32]| {
        Value::Array(
            xs.iter()
                .map(|&x| {
                    if inner_elem == ValueKind::Int2 {
                        Value::Int((x as u16 as i16).into())
                    } else {
                        Value::Other(x.to_string())
                    }
                })
                .collect(),
        )
    };
    let inner = |i: &Inner| match i {
        Inner::Ints(dims, elements) => shaped(
            dims,
            elements
                .iter()
                .map(|e| e.map_or(Value::Null, |x| Value::Int(x.into())))
                .collect(),
        ),
        Inner::Vector(xs) => vector(xs),
    };
    match cell {
        NestedCell::Vector(xs) => vector(xs),
        NestedCell::Outer(dims, elements) => shaped(
            dims,
            elements
                .iter()
                .map(|e| e.as_ref().map_or(Value::Null, inner))
                .collect(),
        ),
    }
}

fn inserted(events: &[Event]) -> &Incoming {
    match events.last() {
        Some(Event::Row { after: Some(a), .. }) => &a[0],
        other => panic!("{other:?}"),
    }
}

const ALL_V: [V; 5] = [
    V::Int2Vector,
    V::OidVector,
    V::IntLists,
    V::Int2Vectors,
    V::OidVectors,
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Arrays whose elements are arrays, and vectors, empty ones included, decode under both
    /// plugins to the same value, the one the model documents.
    #[test]
    fn both_plugins_nest_arrays_of_arrays_alike(
        (v, c) in proptest::sample::select(ALL_V.to_vec()).prop_flat_map(|v| (Just(v), nested_cell(v)))
    ) {
        let (fig, pg) = both_nested(v, &c);
        prop_assert!(same_events(&fig, &pg), "figoutput {:?}\npgoutput  {:?}", fig, pg);
        prop_assert_eq!(inserted(&fig), &Incoming::Value(expected_nested(v, &c)));
    }
}

#[test]
fn both_plugins_agree_on_empty_vectors_and_nested_edge_values() {
    let ints = |dims: Vec<(i32, i32)>, e: Vec<Option<i32>>| Some(Inner::Ints(dims, e));
    let cases: Vec<(V, NestedCell, Value)> = vec![
        // ''::int2vector: figoutput's [[0, 0]], pgoutput's ''.
        (
            V::Int2Vector,
            NestedCell::Vector(vec![]),
            Value::Array(vec![]),
        ),
        (
            V::OidVector,
            NestedCell::Vector(vec![]),
            Value::Array(vec![]),
        ),
        (
            V::Int2Vector,
            NestedCell::Vector(vec![3, 1]),
            Value::Array(vec![Value::Int(3), Value::Int(1)]),
        ),
        // FORMAT.md's example: '{"{1,2}","{}",NULL}'::intlist[].
        (
            V::IntLists,
            NestedCell::Outer(
                vec![(1, 3)],
                vec![
                    ints(vec![(1, 2)], vec![Some(1), Some(2)]),
                    ints(vec![], vec![]),
                    None,
                ],
            ),
            Value::Array(vec![
                Value::Array(vec![Value::Int(1), Value::Int(2)]),
                Value::Array(vec![]),
                Value::Null,
            ]),
        ),
        // A 2-D outer array of inner arrays of different shapes and bounds.
        (
            V::IntLists,
            NestedCell::Outer(
                vec![(0, 1), (1, 2)],
                vec![
                    ints(vec![(0, 2), (1, 1)], vec![Some(4), None]),
                    ints(vec![(1, 1)], vec![Some(-1)]),
                ],
            ),
            // Bounds kept where not 1, at both levels.
            Value::bounded(
                vec![0, 1],
                vec![Value::Array(vec![
                    Value::bounded(
                        vec![0, 1],
                        vec![
                            Value::Array(vec![Value::Int(4)]),
                            Value::Array(vec![Value::Null]),
                        ],
                    ),
                    Value::Array(vec![Value::Int(-1)]),
                ])],
            ),
        ),
        (
            V::Int2Vectors,
            NestedCell::Outer(
                vec![(1, 4)],
                vec![
                    Some(Inner::Vector(vec![1, 2])),
                    Some(Inner::Vector(vec![])),
                    None,
                    Some(Inner::Vector(vec![7])),
                ],
            ),
            Value::Array(vec![
                Value::Array(vec![Value::Int(1), Value::Int(2)]),
                Value::Array(vec![]),
                Value::Null,
                Value::Array(vec![Value::Int(7)]),
            ]),
        ),
        (
            V::OidVectors,
            NestedCell::Outer(vec![(1, 1)], vec![Some(Inner::Vector(vec![23, 25]))]),
            Value::Array(vec![Value::Array(vec![
                Value::Other("23".into()),
                Value::Other("25".into()),
            ])]),
        ),
        (
            V::OidVectors,
            NestedCell::Outer(vec![], vec![]),
            Value::Array(vec![]),
        ),
    ];
    for (v, c, want) in cases {
        let (fig, pg) = both_nested(v, &c);
        assert!(
            same_events(&fig, &pg),
            "{v:?} {c:?}\nfigoutput {fig:?}\npgoutput  {pg:?}"
        );
        assert_eq!(inserted(&fig), &Incoming::Value(want), "{v:?} {c:?}");
    }
}

#[test]
fn fig_arrays_of_arrays_need_the_catalog_and_refuse_bad_values() {
    // The inner kind of intlist[] is in the catalog only: without its rows the RELATION is
    // UnknownType (reload and decode again), and the session keeps nothing of the write.
    let mut fig = Vec::new();
    let mut w = Writer::new(&mut fig);
    w.relation_header(42, b"public", b"t", ReplicaIdentity::Default, 1);
    w.column(&ColumnOut {
        attnum: 1,
        name: b"c",
        type_oid: INTLIST_ARRAY,
        typmod: -1,
        type_name: b"intlist[]",
        flags: 0,
        kind: ValueKind::Array,
        elem_kind: ValueKind::Array,
    });
    let mut st = FigState::new();
    let err = figoutput::decode(&fig, &mut st, &TypeRegistry::builtin()).unwrap_err();
    assert_eq!(err, DecodeError::UnknownType { oid: INTLIST_ARRAY });
    assert_eq!(err.recovery(), Recovery::RefreshTypes);
    assert!(st.relation(42).is_none());
    figoutput::decode(&fig, &mut st, &registry()).unwrap();

    let insert = |write: &dyn Fn(&mut Writer<'_>)| {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        w.insert_header(42, false);
        w.tuple_header(1);
        write(&mut w);
        figoutput::decode(&buf, &mut st.clone(), &registry())
    };
    // An inner value that is not an array of int4, an unchanged-TOAST marker inside, inner dims
    // that do not fit the inner elements: typed errors.
    let bad: [&dyn Fn(&mut Writer<'_>); 4] = [
        &|w| {
            w.array_value_header(&[(1, 1)], 1);
            w.int(1);
        },
        &|w| {
            w.array_value_header(&[(1, 1)], 1);
            w.array_value_header(&[(1, 1)], 1);
            w.str("1");
        },
        &|w| {
            w.array_value_header(&[(1, 1)], 1);
            w.unchanged_toast();
        },
        &|w| {
            w.array_value_header(&[(1, 1)], 1);
            w.array_value_header(&[(1, 2)], 1);
            w.int(1);
        },
    ];
    for (i, write) in bad.iter().enumerate() {
        assert!(
            matches!(insert(*write), Err(DecodeError::Format(_))),
            "case {i}: {:?}",
            insert(*write)
        );
    }
    // Nested deeper than the column's type: a typed error (the element of an int4 inner array is
    // not an array).
    let too_deep = insert(&|w| {
        w.array_value_header(&[(1, 1)], 1);
        w.array_value_header(&[(1, 1)], 1);
        w.array_value_header(&[(1, 1)], 1);
        w.int(1);
    });
    assert!(
        matches!(too_deep, Err(DecodeError::Format(_))),
        "{too_deep:?}"
    );
    // The catalog disagreeing with the RELATION (the type's rows say integer[]): refused.
    let mut wrong = registry();
    wrong.insert(TypeRow {
        oid: INTLIST_ARRAY,
        name: "intlist[]".into(),
        typtype: b'b',
        typelem: 23,
        typbasetype: 0,
        typcategory: b'A',
        typdelim: b',',
    });
    assert!(matches!(
        figoutput::decode(&fig, &mut FigState::new(), &wrong),
        Err(DecodeError::BadTypeInfo { .. })
    ));
}

// ---- hostile figoutput input ---------------------------------------------------------------

/// Valid figoutput writes (one record each, RELATION first so the changes resolve).
fn fig_corpus() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rec = |f: &dyn Fn(&mut Writer<'_>)| {
        let mut buf = Vec::new();
        f(&mut Writer::new(&mut buf));
        out.push(buf);
    };
    rec(&|w| {
        w.relation_header(42, b"public", b"t", ReplicaIdentity::Default, 2);
        for (name, kind, elem) in [
            (&b"id"[..], ValueKind::Int8, ValueKind::Other),
            (b"a", ValueKind::Array, ValueKind::Date),
        ] {
            w.column(&ColumnOut {
                attnum: 1,
                name,
                type_oid: 20,
                typmod: -1,
                type_name: b"bigint",
                flags: 2,
                kind,
                elem_kind: elem,
            });
        }
    });
    rec(&|w| w.begin(1, 2, 3));
    rec(&|w| {
        w.insert_header(42, false);
        w.tuple_header(2);
        w.int(7);
        w.array_value_header(&[(1, 2)], 2);
        w.int(0);
        w.nil();
    });
    rec(&|w| {
        w.update_header(42, true);
        w.old_header(fig_format::OldKind::Full);
        w.tuple_header(2);
        w.int(7);
        w.nil();
        w.tuple_header(2);
        w.int(8);
        w.unchanged_toast();
        w.stream_xid(Some(9));
    });
    rec(&|w| {
        w.delete_header(42, false);
        w.no_old();
    });
    rec(&|w| w.truncate(true, false, &[42, 43], None));
    rec(&|w| w.message(5, true, b"p", b"\x00\x01", Some(3)));
    rec(&|w| w.ddl(5, b"{}", None));
    rec(&|w| w.stream_start(3, true));
    rec(&|w| w.stream_commit(3, 4, 5, 6));
    rec(&|w| w.stream_abort(3, 4));
    rec(&|w| w.commit(1, 2, 3));
    out
}

fn fig_session() -> FigState {
    let mut st = FigState::new();
    figoutput::decode(&fig_corpus()[0], &mut st, &TypeRegistry::builtin()).unwrap();
    st
}

#[test]
fn fig_corpus_decodes() {
    let mut st = fig_session();
    for w in fig_corpus() {
        let ev = figoutput::decode(&w, &mut st, &TypeRegistry::builtin()).unwrap();
        assert_eq!(ev.len(), 1);
    }
}

#[test]
fn fig_huge_declared_lengths_do_not_allocate() {
    let mut st = fig_session();
    // An INSERT whose tuple claims 65535 values with 10 bytes of input.
    let mut buf = Vec::new();
    let mut w = Writer::new(&mut buf);
    w.insert_header(42, false);
    w.tuple_header(65_535);
    buf.extend_from_slice(&[0xc0; 10]);
    assert!(matches!(
        figoutput::decode(&buf, &mut st, &TypeRegistry::builtin()),
        Err(DecodeError::Format(_))
    ));
    // A str32 of 4 GiB.
    let mut buf = Vec::new();
    let mut w = Writer::new(&mut buf);
    w.ddl(1, b"", None);
    let at = buf.len() - 1;
    buf.truncate(at);
    buf.extend_from_slice(&[0xdb, 0xff, 0xff, 0xff, 0xff, b'x']);
    assert!(figoutput::decode(&buf, &mut st, &TypeRegistry::builtin()).is_err());
    // An array value whose dimensions claim 10^9 x 0 elements: none, so it is the empty array,
    // and nothing is allocated by the 10^9; with an element it is refused.
    for n in [0, 1] {
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf);
        w.insert_header(42, false);
        w.tuple_header(2);
        w.int(1);
        w.array_value_header(&[(1, 1_000_000_000), (1, 0)], n);
        for _ in 0..n {
            w.int(0);
        }
        let decoded = figoutput::decode(&buf, &mut st, &TypeRegistry::builtin());
        if n == 0 {
            let Ok(ev) = decoded else {
                panic!("{decoded:?}")
            };
            assert!(matches!(&ev[0], Event::Row { after: Some(a), .. }
                if a[1] == Incoming::Value(Value::Array(vec![]))));
        } else {
            assert!(
                matches!(decoded, Err(DecodeError::Format(_))),
                "{decoded:?}"
            );
        }
    }
}

#[test]
fn fig_width_mismatch_and_unknown_relation() {
    let mut st = fig_session();
    let mut buf = Vec::new();
    let mut w = Writer::new(&mut buf);
    w.insert_header(42, false);
    w.tuple_header(1);
    w.int(1);
    assert!(matches!(
        figoutput::decode(&buf, &mut st, &TypeRegistry::builtin()),
        Err(DecodeError::TupleWidth {
            expected: 2,
            found: 1,
            ..
        })
    ));
    let mut fresh = FigState::new();
    let ins = &fig_corpus()[2];
    assert_eq!(
        figoutput::decode(ins, &mut fresh, &TypeRegistry::builtin()),
        Err(DecodeError::UnknownRelation { relid: 42 })
    );
}

proptest! {
    #[test]
    fn fig_random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
        let _ = figoutput::decode(&bytes, &mut fig_session(), &TypeRegistry::builtin());
    }

    #[test]
    fn fig_every_strict_prefix_is_an_error(which in 0usize..12, cut in any::<proptest::sample::Index>()) {
        let w = &fig_corpus()[which];
        let cut = cut.index(w.len());
        prop_assume!(cut > 0);
        prop_assert!(figoutput::decode(&w[..cut], &mut fig_session(), &TypeRegistry::builtin()).is_err());
    }

    #[test]
    fn fig_mutated_writes_never_panic(which in 0usize..12, flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..4)) {
        let mut w = fig_corpus()[which].clone();
        for (at, byte) in flips {
            let i = at.index(w.len());
            w[i] = byte;
        }
        let _ = figoutput::decode(&w, &mut fig_session(), &TypeRegistry::builtin());
    }
}
