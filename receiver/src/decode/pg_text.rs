//! PostgreSQL's text output of each type, parsed exactly into normalized values.
//!
//! pgoutput sends values as the types' output functions print them, in the session settings the
//! replication connection chose at startup (`DateStyle=ISO`, `TimeZone=UTC`, `extra_float_digits=3`,
//! `IntervalStyle=postgres`, `client_encoding=UTF8`). figoutput sends the binary values instead. Both
//! must end as the same [`Value`], so every date and time parsed here is turned back into the day or
//! microsecond count PostgreSQL stores and printed by [`fig_format::datetime`], the one formatter both
//! paths share:
//!
//! ```text
//! "0044-03-15 BC" ─▶ (year -43, 3, 15) ─▶ days_from_civil ─▶ -746_117 ─▶ format_date ─▶ "-0043-03-15"
//! figoutput int  ─────────────────────────────────────────▶ -746_117 ─▶ format_date ─▶ "-0043-03-15"
//! ```
//!
//! The parsers accept the grammar the output functions produce and reject everything else with a
//! [`TextError`]; they never round (float4 is parsed as `f32`, then widened, exactly as figoutput's
//! float4 is widened), never panic, and allocate at most in proportion to their input.

use super::types::{ScalarKind, TextFormat};
use crate::model::Value;
use fig_format::datetime::{
    civil_from_days, days_from_civil, format_date, format_time, format_timestamp,
};
use fig_format::{
    DATE_NEG_INFINITY, DATE_POS_INFINITY, TIMESTAMP_NEG_INFINITY, TIMESTAMP_POS_INFINITY,
};
use thiserror::Error;

/// Why a value's text was rejected. The text itself is not included: values are customer data and
/// error messages end up in logs.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("invalid {kind} text ({len} bytes): {reason}")]
pub struct TextError {
    pub kind: &'static str,
    pub reason: &'static str,
    pub len: usize,
}

const USECS_PER_SEC: i64 = 1_000_000;
const USECS_PER_DAY: i64 = 86_400 * USECS_PER_SEC;
/// PostgreSQL's MAXDIM.
const MAX_ARRAY_DIMS: usize = 6;

/// Parses one value's text (as pgoutput sends it) by the column's format.
pub fn parse(format: &TextFormat, bytes: &[u8]) -> Result<Value, TextError> {
    let text = std::str::from_utf8(bytes).map_err(|_| TextError {
        kind: "value",
        reason: "not UTF-8 (the replication connection asks for client_encoding UTF8)",
        len: bytes.len(),
    })?;
    parse_text(format, text)
}

/// [`parse`] of text already known to be UTF-8. Recurses only as deep as `format` nests, which
/// the type registry bounds.
fn parse_text(format: &TextFormat, text: &str) -> Result<Value, TextError> {
    match format {
        TextFormat::Scalar(kind) => parse_scalar(*kind, text),
        TextFormat::Array { element, delimiter } => parse_array_of(text, element, *delimiter),
        TextFormat::Vector(kind) => parse_vector(*kind, text),
    }
}

/// Parses the text of one non-array value.
pub fn parse_scalar(kind: ScalarKind, text: &str) -> Result<Value, TextError> {
    use ScalarKind as K;
    Ok(match kind {
        K::Bool => Value::Bool(parse_bool(text)?),
        K::Int2 => Value::Int(parse_int(
            text,
            i16::MIN.into(),
            i16::MAX.into(),
            "smallint",
        )?),
        K::Int4 => Value::Int(parse_int(
            text,
            i32::MIN.into(),
            i32::MAX.into(),
            "integer",
        )?),
        K::Int8 => Value::Int(parse_int(text, i64::MIN, i64::MAX, "bigint")?),
        K::Float4 => Value::Float(parse_float4(text)?.into()),
        K::Float8 => Value::Float(parse_float8(text)?),
        K::Numeric => Value::Numeric(parse_numeric(text)?),
        K::Money { scale } => Value::Numeric(parse_money(text, scale)?),
        K::Text => Value::Text(text.to_owned()),
        K::Bytea => Value::Bytes(parse_bytea(text)?),
        K::Date => Value::Date(format_date(parse_date(text)?)),
        K::Time => Value::Time(format_time(parse_time(text)?)),
        K::Timestamp => Value::Timestamp(format_timestamp(parse_timestamp(text)?, false)),
        K::Timestamptz => Value::Timestamptz(format_timestamp(parse_timestamptz(text)?, true)),
        K::Uuid => Value::Uuid(super::uuid_text(&parse_uuid(text)?)),
        K::Json => Value::Json(text.to_owned()),
        K::Enum => Value::Enum(text.to_owned()),
        K::Other => Value::Other(text.to_owned()),
    })
}

fn err(kind: &'static str, reason: &'static str, text: &str) -> TextError {
    TextError {
        kind,
        reason,
        len: text.len(),
    }
}

/// `cash_out` under any `lc_monetary` (`$1,234.56`, `-$0.05`, `($1.00)`, `1.234,56 €`, `¥1,235`) to
/// the exact decimal `money::numeric` gives. The locale decides the symbols, separators and where
/// the sign goes, but the digits are always all of the amount's with exactly `scale` of them after
/// the decimal point, so the digits alone and `scale` say the amount exactly; a `-` or an opening
/// parenthesis anywhere makes it negative.
pub fn parse_money(text: &str, scale: u8) -> Result<String, TextError> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_digit).collect();
    if digits.is_empty() || digits.len() > 40 {
        return Err(err("money", "expected the digits of an amount", text));
    }
    let negative = text.contains('-') || text.contains('(');
    let scale = usize::from(scale);
    let mut padded = vec![b'0'; (scale + 1).saturating_sub(digits.len())];
    padded.extend_from_slice(&digits);
    let (int, frac) = padded.split_at(padded.len() - scale);
    let int = match int.iter().position(|&d| d != b'0') {
        Some(i) => &int[i..],
        None => b"0",
    };
    let mut out = String::with_capacity(padded.len() + 2);
    if negative && (int != b"0" || frac.iter().any(|&d| d != b'0')) {
        out.push('-');
    }
    out.extend(int.iter().map(|&d| d as char));
    if scale > 0 {
        out.push('.');
        out.extend(frac.iter().map(|&d| d as char));
    }
    Ok(out)
}

/// `boolout`: `t` or `f`.
pub fn parse_bool(text: &str) -> Result<bool, TextError> {
    match text {
        "t" => Ok(true),
        "f" => Ok(false),
        _ => Err(err("boolean", "expected t or f", text)),
    }
}

/// `int2out` / `int4out` / `int8out`: `-?[0-9]+`, in range.
pub fn parse_int(text: &str, min: i64, max: i64, kind: &'static str) -> Result<i64, TextError> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(kind, "expected an optional - and digits", text));
    }
    text.parse::<i64>()
        .ok()
        .filter(|v| (min..=max).contains(v))
        .ok_or(err(kind, "out of range", text))
}

/// The float grammar of `float4out`/`float8out` (shortest exact form since PostgreSQL 12, `%.9g` /
/// `%.17g` before): `-?d+(.d+)?(e[+-]d+)?`, `NaN`, `Infinity`, `-Infinity`.
fn check_float(text: &str, kind: &'static str) -> Result<(), TextError> {
    let bad = || {
        err(
            kind,
            "expected a decimal number, NaN, Infinity or -Infinity",
            text,
        )
    };
    let b = text.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    if !digits(&mut i) {
        return Err(bad());
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return Err(bad());
        }
    }
    if b.get(i) == Some(&b'e') {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return Err(bad());
        }
    }
    if i == b.len() {
        Ok(())
    } else {
        Err(bad())
    }
}

/// `float4out`, parsed as `f32` (the value figoutput sends, before widening).
pub fn parse_float4(text: &str) -> Result<f32, TextError> {
    match text {
        "NaN" => return Ok(f32::NAN),
        "Infinity" => return Ok(f32::INFINITY),
        "-Infinity" => return Ok(f32::NEG_INFINITY),
        _ => {}
    }
    check_float(text, "real")?;
    let v: f32 = text
        .parse()
        .map_err(|_| err("real", "not a number", text))?;
    if v.is_infinite() {
        // float4in rejects overflow; the output function never prints a finite value that
        // overflows.
        return Err(err("real", "out of range", text));
    }
    Ok(v)
}

/// `float8out`.
pub fn parse_float8(text: &str) -> Result<f64, TextError> {
    match text {
        "NaN" => return Ok(f64::NAN),
        "Infinity" => return Ok(f64::INFINITY),
        "-Infinity" => return Ok(f64::NEG_INFINITY),
        _ => {}
    }
    check_float(text, "double precision")?;
    let v: f64 = text
        .parse()
        .map_err(|_| err("double precision", "not a number", text))?;
    if v.is_infinite() {
        return Err(err("double precision", "out of range", text));
    }
    Ok(v)
}

/// `numeric_out`: `-?D+(.D+)?`, `NaN`, `Infinity`, `-Infinity`; kept as text (exact).
pub fn parse_numeric(text: &str) -> Result<String, TextError> {
    let plain = || {
        let body = text.strip_prefix('-').unwrap_or(text);
        let (int, frac) = match body.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (body, None),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        digits(int) && frac.is_none_or(digits)
    };
    if matches!(text, "NaN" | "Infinity" | "-Infinity") || plain() {
        Ok(text.to_owned())
    } else {
        Err(err(
            "numeric",
            "expected -?digits[.digits], NaN, Infinity or -Infinity",
            text,
        ))
    }
}

/// `byteaout`: the hex format `\x0aff…` (the default `bytea_output`), or the escape format
/// (printable bytes as they are, `\\` for a backslash, `\ooo` octal for the rest).
pub fn parse_bytea(text: &str) -> Result<Vec<u8>, TextError> {
    let b = text.as_bytes();
    if let Some(hex) = b.strip_prefix(b"\\x") {
        if hex.len() % 2 != 0 {
            return Err(err("bytea", "odd number of hex digits", text));
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        return hex
            .chunks_exact(2)
            .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
            .collect::<Option<Vec<u8>>>()
            .ok_or(err("bytea", "not a hex digit", text));
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
        } else if b.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let oct = b.get(i + 1..i + 4).filter(|o| {
                (b'0'..=b'3').contains(&o[0]) && o[1..].iter().all(|c| (b'0'..=b'7').contains(c))
            });
            let Some(o) = oct else {
                return Err(err("bytea", "bad escape (expected \\\\ or \\ooo)", text));
            };
            out.push((o[0] - b'0') << 6 | (o[1] - b'0') << 3 | (o[2] - b'0'));
            i += 4;
        }
    }
    Ok(out)
}

/// A cursor over ASCII text for the date and time grammars.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor {
            b: text.as_bytes(),
            pos: 0,
        }
    }
    /// Between `min` and `max` digits (max ≤ 18, so the value fits an i64).
    fn digits(&mut self, min: usize, max: usize) -> Option<i64> {
        let start = self.pos;
        let mut v: i64 = 0;
        while self.pos - start < max {
            match self.b.get(self.pos) {
                Some(c) if c.is_ascii_digit() => {
                    v = v * 10 + i64::from(c - b'0');
                    self.pos += 1;
                }
                _ => break,
            }
        }
        (self.pos - start >= min && !self.b.get(self.pos).is_some_and(u8::is_ascii_digit))
            .then_some(v)
    }
    fn eat(&mut self, s: &[u8]) -> bool {
        if self.b[self.pos..].starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }
    fn done(&self) -> bool {
        self.pos == self.b.len()
    }
}

/// `YYYY-MM-DD` (four or more year digits; the era is applied by the caller): (year, month, day).
fn date_part(c: &mut Cursor<'_>) -> Option<(i64, u32, u32)> {
    // PostgreSQL's dates end in 5874897 AD; nine digits leave room and cannot overflow.
    let y = c.digits(4, 9)?;
    c.eat(b"-").then_some(())?;
    let m = c.digits(2, 2)?;
    c.eat(b"-").then_some(())?;
    let d = c.digits(2, 2)?;
    Some((y, u32::try_from(m).ok()?, u32::try_from(d).ok()?))
}

/// Day count since 2000-01-01 of an output-form date, checking that the date exists.
fn days_of(y: i64, m: u32, d: u32, bc: bool) -> Option<i64> {
    if y == 0 || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // BC years count back from 1 BC = astronomical year 0.
    let year = if bc { 1 - y } else { y };
    let days = days_from_civil(year, m, d);
    (civil_from_days(days) == (year, m, d)).then_some(days)
}

/// `HH:MM:SS[.f{1,6}]` as microseconds of the day; `max_hour` is 24 for `time` (24:00:00 is a valid
/// time), 23 inside a timestamp.
fn time_part(c: &mut Cursor<'_>, max_hour: i64) -> Option<i64> {
    let h = c.digits(2, 2)?;
    c.eat(b":").then_some(())?;
    let mi = c.digits(2, 2)?;
    c.eat(b":").then_some(())?;
    let s = c.digits(2, 2)?;
    let mut frac = 0;
    if c.eat(b".") {
        let start = c.pos;
        frac = c.digits(1, 6)?;
        for _ in c.pos - start..6 {
            frac *= 10;
        }
    }
    if h > max_hour || mi > 59 || s > 59 {
        return None;
    }
    let usecs = ((h * 60 + mi) * 60 + s) * USECS_PER_SEC + frac;
    (usecs <= USECS_PER_DAY).then_some(usecs)
}

/// `date_out` with DateStyle ISO → days since 2000-01-01 (`i32::MIN`/`i32::MAX` for the infinities,
/// PostgreSQL's own sentinels, which is what figoutput sends).
pub fn parse_date(text: &str) -> Result<i32, TextError> {
    match text {
        "infinity" => return Ok(DATE_POS_INFINITY),
        "-infinity" => return Ok(DATE_NEG_INFINITY),
        _ => {}
    }
    let bad = || {
        err(
            "date",
            "expected YYYY-MM-DD[ BC], infinity or -infinity",
            text,
        )
    };
    let mut c = Cursor::new(text);
    let (y, m, d) = date_part(&mut c).ok_or_else(bad)?;
    let bc = c.eat(b" BC");
    if !c.done() {
        return Err(bad());
    }
    let days = days_of(y, m, d, bc).ok_or(err("date", "no such date", text))?;
    i32::try_from(days)
        .ok()
        .filter(|d| *d != DATE_NEG_INFINITY && *d != DATE_POS_INFINITY)
        .ok_or(err("date", "out of range", text))
}

/// `time_out` → microseconds since midnight (up to and including 24:00:00).
pub fn parse_time(text: &str) -> Result<i64, TextError> {
    let mut c = Cursor::new(text);
    let t = time_part(&mut c, 24).filter(|_| c.done()).ok_or(err(
        "time",
        "expected HH:MM:SS[.ffffff] up to 24:00:00",
        text,
    ))?;
    Ok(t)
}

/// `timestamp_out` with DateStyle ISO → microseconds since 2000-01-01 (`i64::MIN`/`i64::MAX` for the
/// infinities).
pub fn parse_timestamp(text: &str) -> Result<i64, TextError> {
    timestamp(text, false, "timestamp")
}

/// `timestamptz_out` with DateStyle ISO: the local time with its UTC offset (`+00` in the replication
/// session, which runs in UTC; any offset is honored) → microseconds since 2000-01-01 UTC.
pub fn parse_timestamptz(text: &str) -> Result<i64, TextError> {
    timestamp(text, true, "timestamp with time zone")
}

fn timestamp(text: &str, with_zone: bool, kind: &'static str) -> Result<i64, TextError> {
    match text {
        "infinity" => return Ok(TIMESTAMP_POS_INFINITY),
        "-infinity" => return Ok(TIMESTAMP_NEG_INFINITY),
        _ => {}
    }
    let bad = || {
        err(
            kind,
            if with_zone {
                "expected YYYY-MM-DD HH:MM:SS[.ffffff]+HH[:MM[:SS]][ BC], infinity or -infinity"
            } else {
                "expected YYYY-MM-DD HH:MM:SS[.ffffff][ BC], infinity or -infinity"
            },
            text,
        )
    };
    let mut c = Cursor::new(text);
    let (y, m, d) = date_part(&mut c).ok_or_else(bad)?;
    if !c.eat(b" ") {
        return Err(bad());
    }
    let tod = time_part(&mut c, 23).ok_or_else(bad)?;
    let offset = if with_zone {
        zone_offset(&mut c).ok_or_else(bad)?
    } else {
        0
    };
    let bc = c.eat(b" BC");
    if !c.done() {
        return Err(bad());
    }
    let days = days_of(y, m, d, bc).ok_or(err(kind, "no such date", text))?;
    days.checked_mul(USECS_PER_DAY)
        .and_then(|t| t.checked_add(tod))
        .and_then(|t| t.checked_sub(offset))
        .filter(|t| *t != TIMESTAMP_NEG_INFINITY && *t != TIMESTAMP_POS_INFINITY)
        .ok_or(err(kind, "out of range", text))
}

/// `EncodeTimezone`: `+HH`, `+HH:MM` or `+HH:MM:SS` (east of UTC positive) → microseconds to subtract
/// from the local time to get UTC.
fn zone_offset(c: &mut Cursor<'_>) -> Option<i64> {
    let sign = match c.peek()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    c.pos += 1;
    let h = c.digits(2, 2)?;
    let mut secs = h * 3600;
    if c.eat(b":") {
        let m = c.digits(2, 2)?;
        secs += m * 60;
        if c.eat(b":") {
            secs += c.digits(2, 2)?;
        }
    }
    Some(sign * secs * USECS_PER_SEC)
}

/// `uuid_out`: `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (either case) → the 16 bytes.
pub fn parse_uuid(text: &str) -> Result<[u8; 16], TextError> {
    let bad = || err("uuid", "expected 8-4-4-4-12 hexadecimal digits", text);
    let b = text.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return Err(bad());
    }
    let mut out = [0u8; 16];
    let mut hex = b.iter().filter(|&&c| c != b'-');
    for byte in &mut out {
        let (Some(hi), Some(lo)) = (hex.next(), hex.next()) else {
            return Err(bad());
        };
        let n = |c: u8| (c as char).to_digit(16);
        *byte = (n(*hi).ok_or_else(bad)? << 4 | n(*lo).ok_or_else(bad)?) as u8;
    }
    Ok(out)
}

/// `int2vectorout` / `oidvectorout`: the elements' text separated by single spaces, `''` for the
/// empty vector (which figoutput sends as one dimension of length 0) → a 1-D array; the lower bound
/// (always 0) is dropped as every array's is. Vectors hold no NULLs.
pub fn parse_vector(kind: ScalarKind, text: &str) -> Result<Value, TextError> {
    if text.is_empty() {
        return Ok(Value::Array(Vec::new()));
    }
    text.split(' ')
        .map(|element| {
            if element.is_empty() {
                Err(err(
                    "vector",
                    "elements must be separated by single spaces",
                    text,
                ))
            } else {
                parse_scalar(kind, element)
            }
        })
        .collect::<Result<_, _>>()
        .map(Value::Array)
}

/// One parsed array item before the element type gives it a meaning.
enum Node {
    /// An element: `None` is an unquoted NULL.
    Leaf(Option<String>),
    List(Vec<Node>),
}

/// `array_out`: `{…}` with elements separated by `delimiter`, double-quoted where needed (with `\"`
/// and `\\` escapes), unquoted `NULL` for null, nested braces for more dimensions, and an optional
/// `[lo:hi][lo:hi]=` prefix when a lower bound is not 1. The result nests row-major (`{{1,2},{3,4}}`
/// → `[[1,2],[3,4]]`); lower bounds are checked against the shape and then dropped, as the model
/// says; `{}` is the empty array `[]`.
pub fn parse_array(text: &str, element: ScalarKind, delimiter: u8) -> Result<Value, TextError> {
    parse_array_of(text, &TextFormat::Scalar(element), delimiter)
}

/// [`parse_array`] with elements of any format: for an array whose elements are arrays, each
/// element's text is parsed as an array of its own, and becomes one [`Value::Array`] element
/// (`{"{1,2}",NULL}` of a domain over `integer[]` → `[[1,2],null]`).
pub fn parse_array_of(text: &str, element: &TextFormat, delimiter: u8) -> Result<Value, TextError> {
    let kind = "array";
    let mut p = ArrayParser {
        b: text.as_bytes(),
        pos: 0,
        delimiter,
        text,
    };
    let declared = p.dims()?;
    let root = p.list(1)?;
    if p.pos != p.b.len() {
        return Err(err(kind, "text after the closing brace", text));
    }
    let mut shape = Vec::new();
    shape_of(&root, &mut shape, text)?;
    let mut lower = Vec::new();
    if let Some(dims) = declared {
        if dims.len() != shape.len() || dims.iter().zip(&shape).any(|((_, d), s)| d != s) {
            return Err(err(
                kind,
                "dimension decoration does not match the elements",
                text,
            ));
        }
        lower = dims.iter().map(|&(lo, _)| lo).collect();
    }
    match to_value(root, element)? {
        Value::Array(elements) if lower.iter().any(|&lo| lo != 1) => {
            Ok(Value::bounded(lower, elements))
        }
        v => Ok(v),
    }
}

fn to_value(node: Node, element: &TextFormat) -> Result<Value, TextError> {
    match node {
        Node::Leaf(None) => Ok(Value::Null),
        Node::Leaf(Some(s)) => parse_text(element, &s),
        Node::List(items) => Ok(Value::Array(
            items
                .into_iter()
                .map(|n| to_value(n, element))
                .collect::<Result<_, _>>()?,
        )),
    }
}

/// Checks that the nested lists form a rectangular array and records its lengths per dimension
/// (empty for `{}`).
fn shape_of(root: &Node, shape: &mut Vec<usize>, text: &str) -> Result<(), TextError> {
    let mut node = root;
    while let Node::List(items) = node {
        shape.push(items.len());
        match items.first() {
            Some(first) => node = first,
            None => break,
        }
    }
    fn fits(node: &Node, depth: usize, shape: &[usize]) -> bool {
        match node {
            Node::Leaf(_) => depth == shape.len(),
            Node::List(items) => {
                shape.get(depth) == Some(&items.len())
                    && items.iter().all(|i| fits(i, depth + 1, shape))
            }
        }
    }
    if !fits(root, 0, shape) {
        return Err(err("array", "sub-arrays of different dimensions", text));
    }
    if shape.as_slice() == [0] {
        shape.clear();
    } else if shape.contains(&0) {
        return Err(err("array", "an empty sub-array", text));
    }
    Ok(())
}

struct ArrayParser<'a> {
    b: &'a [u8],
    pos: usize,
    delimiter: u8,
    text: &'a str,
}

impl ArrayParser<'_> {
    fn fail(&self, reason: &'static str) -> TextError {
        err("array", reason, self.text)
    }

    /// The optional `[lo:hi]…=` prefix: lower bound and length per dimension.
    fn dims(&mut self) -> Result<Option<Vec<(i32, usize)>>, TextError> {
        if self.b.first() != Some(&b'[') {
            return Ok(None);
        }
        let mut lens = Vec::new();
        while self.b.get(self.pos) == Some(&b'[') {
            if lens.len() == MAX_ARRAY_DIMS {
                return Err(self.fail("more than 6 dimensions"));
            }
            self.pos += 1;
            let lo = self.bound()?;
            if self.b.get(self.pos) != Some(&b':') {
                return Err(self.fail("expected : in a dimension"));
            }
            self.pos += 1;
            let hi = self.bound()?;
            if self.b.get(self.pos) != Some(&b']') {
                return Err(self.fail("expected ] after a dimension"));
            }
            self.pos += 1;
            let len = (hi - lo + 1)
                .try_into()
                .ok()
                .filter(|l: &usize| *l > 0)
                .ok_or(self.fail("upper bound below lower bound"))?;
            lens.push((lo as i32, len));
        }
        if self.b.get(self.pos) != Some(&b'=') {
            return Err(self.fail("expected = after the dimensions"));
        }
        self.pos += 1;
        Ok(Some(lens))
    }

    fn bound(&mut self) -> Result<i64, TextError> {
        let start = self.pos;
        if self.b.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        let digits = self.pos;
        while self.b.get(self.pos).is_some_and(u8::is_ascii_digit) && self.pos - digits < 10 {
            self.pos += 1;
        }
        std::str::from_utf8(&self.b[start..self.pos])
            .ok()
            .and_then(|s| s.parse::<i32>().ok())
            .map(i64::from)
            .ok_or(self.fail("bad dimension bound"))
    }

    /// `{ item (delim item)* }` or `{}`, at nesting `depth` (1 for the outermost braces).
    fn list(&mut self, depth: usize) -> Result<Node, TextError> {
        if depth > MAX_ARRAY_DIMS {
            return Err(self.fail("more than 6 dimensions"));
        }
        if self.b.get(self.pos) != Some(&b'{') {
            return Err(self.fail("expected {"));
        }
        self.pos += 1;
        let mut items = Vec::new();
        if self.b.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            return Ok(Node::List(items));
        }
        loop {
            let item = match self.b.get(self.pos) {
                Some(b'{') => self.list(depth + 1)?,
                Some(b'"') => Node::Leaf(Some(self.quoted()?)),
                Some(_) => self.unquoted()?,
                None => return Err(self.fail("unterminated array")),
            };
            items.push(item);
            match self.b.get(self.pos) {
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Node::List(items));
                }
                Some(&c) if c == self.delimiter => self.pos += 1,
                Some(_) => return Err(self.fail("expected a delimiter or }")),
                None => return Err(self.fail("unterminated array")),
            }
        }
    }

    fn quoted(&mut self) -> Result<String, TextError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.b.get(self.pos) {
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    let Some(&c) = self.b.get(self.pos + 1) else {
                        return Err(self.fail("unterminated escape"));
                    };
                    out.push(c);
                    self.pos += 2;
                }
                Some(&c) => {
                    out.push(c);
                    self.pos += 1;
                }
                None => return Err(self.fail("unterminated quoted element")),
            }
        }
        // Escapes only ever drop ASCII backslashes in front of a character, so UTF-8 stays valid.
        String::from_utf8(out).map_err(|_| self.fail("not UTF-8"))
    }

    /// An unquoted element: anything but braces, quotes, the delimiter and white space (array_out
    /// quotes elements containing those); backslash escapes are honored as array_in does.
    fn unquoted(&mut self) -> Result<Node, TextError> {
        let mut out = Vec::new();
        let mut escaped = false;
        while let Some(&c) = self.b.get(self.pos) {
            if c == b'{' || c == b'}' || c == b'"' || c == self.delimiter {
                break;
            }
            if c.is_ascii_whitespace() || c == 0x0b {
                return Err(self.fail("white space in an unquoted element"));
            }
            if c == b'\\' {
                let Some(&e) = self.b.get(self.pos + 1) else {
                    return Err(self.fail("unterminated escape"));
                };
                out.push(e);
                escaped = true;
                self.pos += 2;
            } else {
                out.push(c);
                self.pos += 1;
            }
        }
        if out.is_empty() {
            return Err(self.fail("empty unquoted element"));
        }
        if !escaped && out.eq_ignore_ascii_case(b"NULL") {
            return Ok(Node::Leaf(None));
        }
        String::from_utf8(out)
            .map(|s| Node::Leaf(Some(s)))
            .map_err(|_| self.fail("not UTF-8"))
    }
}

#[cfg(test)]
mod tests;
