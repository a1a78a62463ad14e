//! Every parser against the text PostgreSQL 15 prints (the expected outputs were taken from a server
//! with the replication connection's settings: DateStyle ISO, TimeZone UTC, extra_float_digits 3).

use super::*;
use proptest::prelude::*;

fn s(kind: ScalarKind, text: &str) -> Value {
    parse_scalar(kind, text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn rejects(kind: ScalarKind, text: &str) {
    assert!(
        parse_scalar(kind, text).is_err(),
        "{kind:?} accepted {text:?}"
    );
}

#[test]
fn booleans() {
    assert_eq!(s(ScalarKind::Bool, "t"), Value::Bool(true));
    assert_eq!(s(ScalarKind::Bool, "f"), Value::Bool(false));
    for t in ["true", "T", "", "1", "t "] {
        rejects(ScalarKind::Bool, t);
    }
}

#[test]
fn integers_in_range_only() {
    use ScalarKind::*;
    assert_eq!(s(Int2, "-32768"), Value::Int(-32768));
    assert_eq!(s(Int4, "2147483647"), Value::Int(2_147_483_647));
    assert_eq!(s(Int8, "-9223372036854775808"), Value::Int(i64::MIN));
    assert_eq!(s(Int8, "0"), Value::Int(0));
    rejects(Int2, "32768");
    rejects(Int4, "-2147483649");
    rejects(Int8, "9223372036854775808");
    for t in ["", "-", "+1", " 1", "1.0", "1e3", "0x10", "١"] {
        rejects(Int8, t);
    }
}

#[test]
fn floats_keep_specials_and_float4_is_widened_from_f32() {
    use ScalarKind::*;
    assert_eq!(s(Float4, "1.5"), Value::Float(1.5));
    // 0.1 as float4 is not 0.1 as float8: the f32 value is widened, as figoutput's is.
    assert_eq!(s(Float4, "0.1"), Value::Float(f64::from(0.1f32)));
    assert_eq!(
        s(Float4, "3.4028235e+38"),
        Value::Float(f64::from(f32::MAX))
    );
    assert_eq!(
        s(Float4, "1e-45"),
        Value::Float(f64::from(f32::from_bits(1)))
    );
    assert_eq!(s(Float4, "1e+30"), Value::Float(f64::from(1e30f32)));
    assert_eq!(s(Float8, "-0"), Value::Float(-0.0));
    assert_eq!(s(Float8, "1.7976931348623157e+308"), Value::Float(f64::MAX));
    assert_eq!(s(Float8, "5e-324"), Value::Float(f64::from_bits(1)));
    assert_eq!(s(Float8, "Infinity"), Value::Float(f64::INFINITY));
    assert_eq!(s(Float8, "-Infinity"), Value::Float(f64::NEG_INFINITY));
    assert!(matches!(s(Float8, "NaN"), Value::Float(f) if f.is_nan()));
    assert!(matches!(s(Float4, "NaN"), Value::Float(f) if f.is_nan()));
    for t in [
        "", "inf", "nan", "infinity", "1e", ".5", "5.", "+1", "1e400", "0x1p3", " 1",
    ] {
        rejects(Float8, t);
    }
    rejects(Float4, "3.5e+38");
}

#[test]
fn numerics_stay_exact_text() {
    let long = format!("-{}.{}", "9".repeat(400), "0123456789".repeat(30));
    assert_eq!(s(ScalarKind::Numeric, &long), Value::Numeric(long.clone()));
    for t in [
        "0",
        "-0.50",
        "NaN",
        "Infinity",
        "-Infinity",
        "1234567890.000",
    ] {
        assert_eq!(s(ScalarKind::Numeric, t), Value::Numeric(t.into()));
    }
    for t in [
        "", "-", "1.", ".5", "1e5", "nan", "+1", "1,5", "-NaN", "1.2.3",
    ] {
        rejects(ScalarKind::Numeric, t);
    }
}

#[test]
fn text_json_enum_other_as_is() {
    use ScalarKind::*;
    assert_eq!(s(Text, " a\tb\"\\ "), Value::Text(" a\tb\"\\ ".into()));
    assert_eq!(s(Text, ""), Value::Text(String::new()));
    assert_eq!(
        s(Json, "{\"a\": [1, 2]}"),
        Value::Json("{\"a\": [1, 2]}".into())
    );
    assert_eq!(s(Enum, "happy"), Value::Enum("happy".into()));
    assert_eq!(
        s(Other, "1 day 02:03:04"),
        Value::Other("1 day 02:03:04".into())
    );
    assert!(parse(&TextFormat::Scalar(Text), b"\xff").is_err());
}

#[test]
fn bytea_hex_and_escape() {
    use ScalarKind::Bytea;
    assert_eq!(s(Bytea, "\\x"), Value::Bytes(vec![]));
    assert_eq!(s(Bytea, "\\x00ff7F"), Value::Bytes(vec![0, 255, 127]));
    assert_eq!(
        s(Bytea, "a\\\\b\\000\\377"),
        Value::Bytes(b"a\\b\x00\xff".to_vec())
    );
    for t in ["\\x0", "\\xzz", "\\", "\\400", "\\12", "\\q"] {
        rejects(Bytea, t);
    }
}

#[test]
fn dates_in_both_eras_and_beyond_9999() {
    use ScalarKind::Date;
    let d = |t| s(Date, t);
    assert_eq!(d("2000-01-01"), Value::Date("2000-01-01".into()));
    assert_eq!(d("2024-02-29"), Value::Date("2024-02-29".into()));
    // 44 BC is astronomical year -43; 1 BC is year 0.
    assert_eq!(d("0044-03-15 BC"), Value::Date("-0043-03-15".into()));
    assert_eq!(d("0001-12-31 BC"), Value::Date("0000-12-31".into()));
    assert_eq!(d("4713-01-01 BC"), Value::Date("-4712-01-01".into()));
    assert_eq!(d("10000-01-01"), Value::Date("10000-01-01".into()));
    assert_eq!(d("5874897-12-31"), Value::Date("5874897-12-31".into()));
    assert_eq!(d("infinity"), Value::Date("infinity".into()));
    assert_eq!(d("-infinity"), Value::Date("-infinity".into()));
    assert_eq!(parse_date("2000-01-02"), Ok(1));
    assert_eq!(parse_date("0044-03-15 BC"), Ok(-746_117));
    for t in [
        "2023-02-29",
        "0000-01-01",
        "2000-13-01",
        "2000-00-10",
        "2000-01-32",
        "200-01-01",
        "2000-1-01",
        "2000-01-01 AD",
        "2000-01-01 bc",
        "2000-01-01 ",
        "Infinity",
        "1234567890-01-01",
    ] {
        rejects(Date, t);
    }
}

#[test]
fn times_with_six_fractional_digits_and_24h() {
    use ScalarKind::Time;
    assert_eq!(s(Time, "00:00:00"), Value::Time("00:00:00.000000".into()));
    assert_eq!(s(Time, "12:34:56.5"), Value::Time("12:34:56.500000".into()));
    assert_eq!(
        s(Time, "23:59:59.999999"),
        Value::Time("23:59:59.999999".into())
    );
    assert_eq!(s(Time, "24:00:00"), Value::Time("24:00:00.000000".into()));
    for t in [
        "24:00:00.000001",
        "25:00:00",
        "12:60:00",
        "12:00:60",
        "12:00",
        "1:00:00",
        "12:00:00.1234567",
        "12:00:00.",
    ] {
        rejects(Time, t);
    }
}

#[test]
fn timestamps_with_and_without_zone() {
    use ScalarKind::{Timestamp, Timestamptz};
    assert_eq!(
        s(Timestamp, "2026-11-24 23:45:17.123456"),
        Value::Timestamp("2026-11-24T23:45:17.123456".into())
    );
    assert_eq!(
        s(Timestamp, "0044-03-15 12:00:00.5 BC"),
        Value::Timestamp("-0043-03-15T12:00:00.500000".into())
    );
    assert_eq!(
        s(Timestamp, "294276-12-31 23:59:59.999999"),
        Value::Timestamp("294276-12-31T23:59:59.999999".into())
    );
    assert_eq!(
        s(Timestamp, "infinity"),
        Value::Timestamp("infinity".into())
    );
    assert_eq!(
        s(Timestamptz, "-infinity"),
        Value::Timestamptz("-infinity".into())
    );
    assert_eq!(
        s(Timestamptz, "2000-01-01 00:00:00+00"),
        Value::Timestamptz("2000-01-01T00:00:00.000000Z".into())
    );
    assert_eq!(
        s(Timestamptz, "0044-03-15 12:00:00.5+00 BC"),
        Value::Timestamptz("-0043-03-15T12:00:00.500000Z".into())
    );
    assert_eq!(
        s(Timestamptz, "10000-01-01 00:00:00+00"),
        Value::Timestamptz("10000-01-01T00:00:00.000000Z".into())
    );
    // Another session time zone still yields the same instant.
    assert_eq!(
        s(Timestamptz, "2000-01-01 05:30:00+05:30"),
        Value::Timestamptz("2000-01-01T00:00:00.000000Z".into())
    );
    assert_eq!(
        s(Timestamptz, "1999-12-31 23:06:32-00:53:28"),
        Value::Timestamptz("2000-01-01T00:00:00.000000Z".into())
    );
    for t in [
        "2000-01-01T00:00:00",
        "2000-01-01 24:00:00",
        "0000-01-01 00:00:00",
        "2000-01-01",
        "2000-02-30 00:00:00",
    ] {
        rejects(Timestamp, t);
    }
    for t in [
        "2000-01-01 00:00:00",
        "2000-01-01 00:00:00Z",
        "2000-01-01 00:00:00+0",
        "2000-01-01 00:00:00 BC+00",
    ] {
        rejects(Timestamptz, t);
    }
}

#[test]
fn uuids_canonical_lower_case() {
    let u = "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11";
    assert_eq!(
        s(ScalarKind::Uuid, u),
        Value::Uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into())
    );
    for t in [
        "a0eebc999c0b4ef8bb6d6bb9bd380a11",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g",
        "",
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
    ] {
        rejects(ScalarKind::Uuid, t);
    }
}

fn arr(text: &str, element: ScalarKind) -> Value {
    parse_array(text, element, b',').unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

#[test]
fn arrays_empty_nested_null_quoted() {
    use ScalarKind::*;
    let i = Value::Int;
    let t = |s: &str| Value::Text(s.into());
    assert_eq!(arr("{}", Int4), Value::Array(vec![]));
    assert_eq!(arr("{1,2,3}", Int4), Value::Array(vec![i(1), i(2), i(3)]));
    assert_eq!(
        arr("{{1,NULL},{3,4}}", Int4),
        Value::Array(vec![
            Value::Array(vec![i(1), Value::Null]),
            Value::Array(vec![i(3), i(4)]),
        ])
    );
    // Quoting and escapes, as array_out writes them; a quoted "NULL" is the text NULL.
    assert_eq!(
        arr(r#"{"a\"b","c\\d","","NULL",null," x","{}",plain}"#, Text),
        Value::Array(vec![
            t("a\"b"),
            t("c\\d"),
            t(""),
            t("NULL"),
            Value::Null,
            t(" x"),
            t("{}"),
            t("plain"),
        ])
    );
    // Lower bounds are checked against the shape, and kept where one is not 1.
    let Value::Array(plain) = arr("{{1,2},{3,4}}", Int4) else {
        panic!("a plain array")
    };
    assert_eq!(
        arr("[0:1][2:3]={{1,2},{3,4}}", Int4),
        Value::bounded(vec![0, 2], plain.clone())
    );
    assert_eq!(arr("[1:2][1:2]={{1,2},{3,4}}", Int4), Value::Array(plain));
    assert_eq!(
        arr("[-5:-5]={7}", Int4),
        Value::bounded(vec![-5], vec![i(7)])
    );
    assert_eq!(
        arr("[-2147483648:-2147483648]={7}", Int4),
        Value::bounded(vec![i32::MIN], vec![i(7)])
    );
    // Elements are parsed by their type.
    assert_eq!(
        arr(r#"{"0044-03-15 BC",NULL}"#, Date),
        Value::Array(vec![Value::Date("-0043-03-15".into()), Value::Null])
    );
    assert_eq!(
        arr(r#"{"2020-01-01 10:00:00+00"}"#, Timestamptz),
        Value::Array(vec![Value::Timestamptz(
            "2020-01-01T10:00:00.000000Z".into()
        )])
    );
    // box uses ';' between elements; its elements contain commas.
    assert_eq!(
        parse_array("{(1,1),(0,0);(2,2),(1,1)}", Other, b';').unwrap(),
        Value::Array(vec![
            Value::Other("(1,1),(0,0)".into()),
            Value::Other("(2,2),(1,1)".into())
        ])
    );
    // Six dimensions (MAXDIM) are fine.
    let six = "{{{{{{1}}}}}}";
    let mut want = i(1);
    for _ in 0..6 {
        want = Value::Array(vec![want]);
    }
    assert_eq!(arr(six, Int4), want);
}

#[test]
fn malformed_arrays_are_rejected() {
    for t in [
        "",
        "{",
        "}",
        "{1,2",
        "{1,,2}",
        "{1,}",
        "{,1}",
        "{1 ,2}",
        "{{1},2}",
        "{1,{2}}",
        "{{1,2},{3}}",
        "{{}}",
        "{{},{}}",
        "{1}x",
        r#"{"a}"#,
        r#"{"a\"}"#,
        "{a\\}",
        "{{{{{{{1}}}}}}}",
        "[1:2]={1}",
        "[1:1][1:1]={1}",
        "[2:1]={}",
        "[1:1]{1}",
        "[1:1={1}",
        "[a:1]={1}",
        "{x}",
    ] {
        assert!(
            parse_array(t, ScalarKind::Int4, b',').is_err(),
            "accepted {t:?}"
        );
    }
    // x is fine as text, and an escaped NULL is the text NULL.
    assert_eq!(
        arr("{x,N\\ULL}", ScalarKind::Text),
        Value::Array(vec![Value::Text("x".into()), Value::Text("NULL".into())])
    );
}

#[test]
fn vectors_are_space_separated() {
    use ScalarKind::*;
    let i = Value::Int;
    let o = |s: &str| Value::Other(s.into());
    // int2vectorout and oidvectorout; the empty vector is ''.
    assert_eq!(
        parse_vector(Int2, "3 1"),
        Ok(Value::Array(vec![i(3), i(1)]))
    );
    assert_eq!(
        parse_vector(Int2, "-32768"),
        Ok(Value::Array(vec![i(-32768)]))
    );
    assert_eq!(parse_vector(Int2, ""), Ok(Value::Array(vec![])));
    assert_eq!(
        parse_vector(Other, "23 25"),
        Ok(Value::Array(vec![o("23"), o("25")]))
    );
    assert_eq!(parse_vector(Other, ""), Ok(Value::Array(vec![])));
    assert_eq!(
        parse(&TextFormat::Vector(Int2), b""),
        Ok(Value::Array(vec![]))
    );
    for t in [
        " ", "1 ", " 1", "1  2", "1,2", "{1,2}", "32768", "NULL", "1 x",
    ] {
        assert!(parse_vector(Int2, t).is_err(), "accepted {t:?}");
    }
}

#[test]
fn arrays_of_arrays_nest_one_array_per_element() {
    use ScalarKind::*;
    let i = Value::Int;
    let a = Value::Array;
    let ints = TextFormat::array(TextFormat::Scalar(Int4), b',');
    // An array of a domain over integer[]: each element is an inner array's text, quoted.
    let intlists = TextFormat::array(ints.clone(), b',');
    let p =
        |f: &TextFormat, t: &str| parse(f, t.as_bytes()).unwrap_or_else(|e| panic!("{t:?}: {e}"));
    assert_eq!(
        p(&intlists, r#"{"{1,2}","{}",NULL}"#),
        a(vec![a(vec![i(1), i(2)]), a(vec![]), Value::Null])
    );
    // A 2-D outer array; inner arrays of any shape, bounds kept at both levels.
    assert_eq!(
        p(
            &intlists,
            r#"[0:1][1:2]={{"{1}","{2,3}"},{NULL,"[0:1][1:1]={{4},{5}}"}}"#
        ),
        Value::bounded(
            vec![0, 1],
            vec![
                a(vec![a(vec![i(1)]), a(vec![i(2), i(3)])]),
                a(vec![
                    Value::Null,
                    Value::bounded(vec![0, 1], vec![a(vec![i(4)]), a(vec![i(5)])])
                ]),
            ]
        )
    );
    assert_eq!(p(&intlists, "{}"), a(vec![]));
    // int2vector[] and oidvector[]: an element with one value is not quoted, an empty one is "".
    let int2vectors = TextFormat::array(TextFormat::Vector(Int2), b',');
    assert_eq!(
        p(&int2vectors, r#"{"1 2","",NULL,7}"#),
        a(vec![
            a(vec![i(1), i(2)]),
            a(vec![]),
            Value::Null,
            a(vec![i(7)])
        ])
    );
    let oidvectors = TextFormat::array(TextFormat::Vector(Other), b',');
    assert_eq!(
        p(&oidvectors, r#"{23,""}"#),
        a(vec![a(vec![Value::Other("23".into())]), a(vec![])])
    );
    // Three levels: an array of a domain over an array of a domain over integer[].
    let three = TextFormat::array(intlists.clone(), b',');
    assert_eq!(
        p(&three, r#"{"{\"{1}\",NULL}"}"#),
        a(vec![a(vec![a(vec![i(1)]), Value::Null])])
    );
    // An inner text that is not an array of the inner type is refused.
    for t in [r#"{"1,2"}"#, r#"{1}"#, r#"{"{x}"}"#, r#"{"{1}x"}"#] {
        assert!(parse(&intlists, t.as_bytes()).is_err(), "accepted {t:?}");
    }
    assert!(parse(&int2vectors, br#"{"1  2"}"#).is_err());
}

proptest! {
    #[test]
    fn parsers_never_panic(kind in 0usize..17, text in ".{0,40}") {
        let kinds = [
            ScalarKind::Bool, ScalarKind::Int2, ScalarKind::Int4, ScalarKind::Int8, ScalarKind::Float4,
            ScalarKind::Float8, ScalarKind::Numeric, ScalarKind::Text, ScalarKind::Bytea, ScalarKind::Date,
            ScalarKind::Time, ScalarKind::Timestamp, ScalarKind::Timestamptz, ScalarKind::Uuid,
            ScalarKind::Json, ScalarKind::Enum, ScalarKind::Other,
        ];
        let _ = parse_scalar(kinds[kind], &text);
        let _ = parse_array(&text, kinds[kind], b',');
    }

    #[test]
    fn array_parser_never_panics_on_array_like_text(text in r#"(\[-?[0-9]:[0-9]\])*=?[{}",\\a-c0-9 NUL]{0,40}"#) {
        let _ = parse_array(&text, ScalarKind::Text, b',');
        let _ = parse_array(&text, ScalarKind::Int4, b',');
        let ints = TextFormat::array(TextFormat::Scalar(ScalarKind::Int4), b',');
        let _ = parse(&TextFormat::array(ints, b','), text.as_bytes());
        let _ = parse(&TextFormat::array(TextFormat::Vector(ScalarKind::Int2), b','), text.as_bytes());
        let _ = parse(&TextFormat::Vector(ScalarKind::Int2), text.as_bytes());
    }

    #[test]
    fn dates_round_trip_through_the_shared_formatter(days in -2_451_545i32..2_145_031_948) {
        // The whole range of PostgreSQL dates (4713 BC to 5874897 AD), printed as date_out does.
        let (y, m, d) = civil_from_days(days.into());
        let text = if y <= 0 {
            format!("{:04}-{m:02}-{d:02} BC", 1 - y)
        } else {
            format!("{y:04}-{m:02}-{d:02}")
        };
        prop_assert_eq!(parse_date(&text), Ok(days));
    }
}

#[test]
fn money_in_any_locale_is_the_exact_decimal_money_numeric_gives() {
    for (text, scale, want) in [
        ("$1,234.56", 2, "1234.56"),
        ("-$0.05", 2, "-0.05"),
        ("($1.00)", 2, "-1.00"),
        ("1.234,56 €", 2, "1234.56"),
        ("-1.234,56 €", 2, "-1234.56"),
        ("¥1,235", 0, "1235"),
        ("$0.00", 2, "0.00"),
        ("-$0.00", 2, "0.00"),
        ("$92,233,720,368,547,758.07", 2, "92233720368547758.07"),
        ("-$92,233,720,368,547,758.08", 2, "-92233720368547758.08"),
        ("BD 1.234", 3, "1.234"),
        ("$.05", 2, "0.05"),
    ] {
        assert_eq!(
            s(ScalarKind::Money { scale }, text),
            Value::Numeric(want.into()),
            "{text} at scale {scale}"
        );
    }
    rejects(ScalarKind::Money { scale: 2 }, "$");
    rejects(ScalarKind::Money { scale: 2 }, "");
}
