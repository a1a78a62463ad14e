//! Type information for pgoutput: how a column's text is parsed, and what its type is called.
//!
//! pgoutput's RELATION message names each column's type only by OID and typmod. figoutput decides the
//! encoding inside the server (`TypeEncoder::for_type`: domains resolve to their base type, true
//! arrays to their element type, enums are labels, anything else is text); this module makes the same
//! decision from the outside. The figoutput decoder asks it too, for what figoutput's RELATION leaves
//! out: the element kind of the inner arrays of an array whose elements are arrays.
//!
//! ```text
//! RELATION (oid, typmod) ──▶ TypeRegistry::resolve ──▶ ColumnType { name, format }
//!                                 │                          │        └─ pg_text parses each value
//!                                 │                          └─ model::Column::type_name
//!                                 ├─ built-in OIDs: known statically (never change)
//!                                 └─ everything else: rows of TYPE_QUERY, loaded by the caller
//! ```
//!
//! A type missing from both is [`DecodeError::UnknownType`]: the caller reloads the registry with
//! [`TYPE_QUERY`] and decodes the same message again. Guessing (say, "treat it as text") would hand a
//! sink a value whose meaning silently differs from what figoutput would have sent for the same row.
//!
//! Type names equal PostgreSQL's `format_type(oid, typmod)` for the built-in types, typmods included
//! (`numeric(18,2)`, `character varying(10)[]`, `timestamp(3) with time zone`), because figoutput's
//! RELATION carries `format_type_with_typemod` and both plugins must describe a table identically. For
//! catalog types the name is the query's `format_type(oid, NULL)`; typmods of user-defined types (rare)
//! are not rendered. Names of catalog types depend on the `search_path` of the session that ran the
//! query, as figoutput's do on the walsender's: run [`TYPE_QUERY`] with the role's default search path.

use super::DecodeError;
use std::collections::HashMap;

/// How the text of one non-array type becomes a [`crate::model::Value`]; mirrors
/// [`fig_format::ValueKind`] minus `Array`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScalarKind {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    /// `money`: text output in the server's `lc_monetary` with exactly `scale` fraction digits,
    /// normalized as the exact decimal `money::numeric` gives (as figoutput sends it).
    Money {
        scale: u8,
    },
    /// text, varchar, bpchar, name.
    Text,
    Bytea,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Uuid,
    /// json and jsonb.
    Json,
    Enum,
    /// PostgreSQL's text output, kept as it is.
    Other,
}

/// How a column's text is parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TextFormat {
    Scalar(ScalarKind),
    /// An array literal (`array_out`) whose elements are `element`, separated by the element type's
    /// `typdelim` (`,` for every type but `box`, which uses `;`). The element is an array itself
    /// for an array of a domain over an array type, `int2vector[]` and `oidvector[]`: each element
    /// is then that array's own text (double-quoted where it holds braces, delimiters or spaces).
    Array {
        element: Box<TextFormat>,
        delimiter: u8,
    },
    /// `int2vector` or `oidvector` (`int2vectorout`, `oidvectorout`): PostgreSQL's 1-D arrays of
    /// `smallint` and `oid`, printed as the elements separated by single spaces, `''` when empty.
    Vector(ScalarKind),
}

impl TextFormat {
    /// An array of `element`s separated by `delimiter`.
    pub fn array(element: TextFormat, delimiter: u8) -> TextFormat {
        TextFormat::Array {
            element: Box::new(element),
            delimiter,
        }
    }

    /// How deep arrays nest in this format: 0 for a scalar, 1 for an array of scalars, 2 for an
    /// array whose elements are arrays of scalars, …
    pub fn array_nesting(&self) -> usize {
        match self {
            TextFormat::Scalar(_) => 0,
            TextFormat::Vector(_) => 1,
            TextFormat::Array { element, .. } => 1 + element.array_nesting(),
        }
    }
}

/// How deep arrays may nest inside arrays, as the figoutput reader allows
/// ([`fig_format::decode::MAX_ARRAY_NESTING`]): a deeper type is [`DecodeError::ArraysTooDeep`]
/// under both plugins.
pub const MAX_ARRAY_NESTING: usize = fig_format::decode::MAX_ARRAY_NESTING as usize;

/// A resolved column type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnType {
    /// `format_type(oid, typmod)`.
    pub name: String,
    pub format: TextFormat,
}

/// The SQL that loads the registry: one row per type, columns in [`TypeRow`] order. Run it on a
/// regular SQL connection to the same database as the slot, with the role's default `search_path`.
///
/// `"char"` columns come back as `i8` in tokio-postgres, OIDs as `u32`.
pub const TYPE_QUERY: &str =
    "SELECT t.oid, pg_catalog.format_type(t.oid, NULL) AS name, t.typtype, \
t.typelem, t.typbasetype, t.typcategory, t.typdelim \
FROM pg_catalog.pg_type t WHERE t.typtype <> 'p' AND t.typisdefined ORDER BY t.oid";

/// One row of [`TYPE_QUERY`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeRow {
    pub oid: u32,
    /// `format_type(oid, NULL)`.
    pub name: String,
    /// `typtype`: `b` base, `c` composite, `d` domain, `e` enum, `r` range, `m` multirange.
    pub typtype: u8,
    /// Element type of an array (0 otherwise).
    pub typelem: u32,
    /// Base type of a domain (0 otherwise).
    pub typbasetype: u32,
    /// `typcategory`: `A` for arrays.
    pub typcategory: u8,
    /// The delimiter between this type's values in an array literal.
    pub typdelim: u8,
}

/// `(oid, name, typtype, typelem, typbasetype, typcategory, typdelim)` as tokio-postgres returns the
/// columns of [`TYPE_QUERY`] (`"char"` as `i8`).
impl From<(u32, String, i8, u32, u32, i8, i8)> for TypeRow {
    fn from(r: (u32, String, i8, u32, u32, i8, i8)) -> Self {
        TypeRow {
            oid: r.0,
            name: r.1,
            typtype: r.2 as u8,
            typelem: r.3,
            typbasetype: r.4,
            typcategory: r.5 as u8,
            typdelim: r.6 as u8,
        }
    }
}

/// Built-in types by OID: their `format_type` name without typmod and their text format. These OIDs
/// are fixed in PostgreSQL's catalog (`pg_type.dat`) and never change between versions.
fn builtin(oid: u32) -> Option<(&'static str, TextFormat)> {
    use ScalarKind::*;
    let s = TextFormat::Scalar;
    let a = |element| TextFormat::array(TextFormat::Scalar(element), b',');
    Some(match oid {
        16 => ("boolean", s(Bool)),
        21 => ("smallint", s(Int2)),
        23 => ("integer", s(Int4)),
        20 => ("bigint", s(Int8)),
        700 => ("real", s(Float4)),
        701 => ("double precision", s(Float8)),
        1700 => ("numeric", s(Numeric)),
        // The scale is the server's (see `TypeRegistry::set_money_scale`).
        790 => ("money", s(Money { scale: 2 })),
        25 => ("text", s(Text)),
        1043 => ("character varying", s(Text)),
        1042 => ("character", s(Text)),
        19 => ("name", s(Text)),
        17 => ("bytea", s(Bytea)),
        1082 => ("date", s(Date)),
        1083 => ("time without time zone", s(Time)),
        1114 => ("timestamp without time zone", s(Timestamp)),
        1184 => ("timestamp with time zone", s(Timestamptz)),
        2950 => ("uuid", s(Uuid)),
        114 => ("json", s(Json)),
        3802 => ("jsonb", s(Json)),
        // Built-ins without a native form whose names carry a typmod.
        1266 => ("time with time zone", s(Other)),
        1186 => ("interval", s(Other)),
        1560 => ("bit", s(Other)),
        1562 => ("bit varying", s(Other)),
        1000 => ("boolean[]", a(Bool)),
        1005 => ("smallint[]", a(Int2)),
        1007 => ("integer[]", a(Int4)),
        1016 => ("bigint[]", a(Int8)),
        1021 => ("real[]", a(Float4)),
        1022 => ("double precision[]", a(Float8)),
        1231 => ("numeric[]", a(Numeric)),
        791 => ("money[]", a(Money { scale: 2 })),
        1009 => ("text[]", a(Text)),
        1015 => ("character varying[]", a(Text)),
        1014 => ("character[]", a(Text)),
        1003 => ("name[]", a(Text)),
        1001 => ("bytea[]", a(Bytea)),
        1182 => ("date[]", a(Date)),
        1183 => ("time without time zone[]", a(Time)),
        1115 => ("timestamp without time zone[]", a(Timestamp)),
        1185 => ("timestamp with time zone[]", a(Timestamptz)),
        2951 => ("uuid[]", a(Uuid)),
        199 => ("json[]", a(Json)),
        3807 => ("jsonb[]", a(Json)),
        1270 => ("time with time zone[]", a(Other)),
        1187 => ("interval[]", a(Other)),
        1561 => ("bit[]", a(Other)),
        1563 => ("bit varying[]", a(Other)),
        // True arrays with output functions of their own; an oid is kind Other (its decimal text),
        // as figoutput sends it.
        22 => ("int2vector", TextFormat::Vector(Int2)),
        30 => ("oidvector", TextFormat::Vector(Other)),
        1006 => (
            "int2vector[]",
            TextFormat::array(TextFormat::Vector(Int2), b','),
        ),
        1013 => (
            "oidvector[]",
            TextFormat::array(TextFormat::Vector(Other), b','),
        ),
        _ => return None,
    })
}

/// Element type of the built-in array types above.
fn builtin_array_element(oid: u32) -> Option<u32> {
    Some(match oid {
        1000 => 16,
        1005 => 21,
        1007 => 23,
        1016 => 20,
        1021 => 700,
        1022 => 701,
        1231 => 1700,
        791 => 790,
        1009 => 25,
        1015 => 1043,
        1014 => 1042,
        1003 => 19,
        1001 => 17,
        1182 => 1082,
        1183 => 1083,
        1115 => 1114,
        1185 => 1184,
        2951 => 2950,
        199 => 114,
        3807 => 3802,
        1270 => 1266,
        1187 => 1186,
        1561 => 1560,
        1563 => 1562,
        1006 => 22,
        1013 => 30,
        _ => return None,
    })
}

/// PostgreSQL's `format_type(oid, typmod)` for the built-in types whose name depends on the typmod
/// (`format_type.c` and the types' `typmodout` functions); `None` for any other OID.
pub fn format_builtin_type(oid: u32, typmod: i32) -> Option<String> {
    if let Some(elem) = builtin_array_element(oid) {
        return format_builtin_type(elem, typmod).map(|n| n + "[]");
    }
    let (base, _) = builtin(oid)?;
    let with = typmod >= 0;
    Some(match oid {
        1700 if with => {
            // numeric_typmod_precision / numeric_typmod_scale (the scale may be negative, PG 15+).
            let t = typmod.wrapping_sub(4);
            let precision = (t >> 16) & 0xffff;
            let scale = ((t & 0x7ff) ^ 1024) - 1024;
            format!("numeric({precision},{scale})")
        }
        1043 if with => format!("character varying({})", typmod - 4),
        1042 if with => format!("character({})", typmod - 4),
        // bpchar and bit with typmod -1 mean something else than CHARACTER / BIT (which are (1)), so
        // format_type spells the type's own name.
        1042 => "bpchar".to_owned(),
        1560 if with => format!("bit({typmod})"),
        1560 => "\"bit\"".to_owned(),
        1562 if with => format!("bit varying({typmod})"),
        1083 if with => format!("time({typmod}) without time zone"),
        1266 if with => format!("time({typmod}) with time zone"),
        1114 if with => format!("timestamp({typmod}) without time zone"),
        1184 if with => format!("timestamp({typmod}) with time zone"),
        1186 if with => format!("interval{}", interval_typmod(typmod)),
        _ => base.to_owned(),
    })
}

/// `intervaltypmodout`.
fn interval_typmod(typmod: i32) -> String {
    const MONTH: i32 = 1 << 1;
    const YEAR: i32 = 1 << 2;
    const DAY: i32 = 1 << 3;
    const HOUR: i32 = 1 << 10;
    const MINUTE: i32 = 1 << 11;
    const SECOND: i32 = 1 << 12;
    const FULL_PRECISION: i32 = 0xffff;
    let range = (typmod >> 16) & 0x7fff;
    let precision = typmod & 0xffff;
    let fields = match range {
        YEAR => " year",
        MONTH => " month",
        DAY => " day",
        HOUR => " hour",
        MINUTE => " minute",
        SECOND => " second",
        r if r == YEAR | MONTH => " year to month",
        r if r == DAY | HOUR => " day to hour",
        r if r == DAY | HOUR | MINUTE => " day to minute",
        r if r == DAY | HOUR | MINUTE | SECOND => " day to second",
        r if r == HOUR | MINUTE => " hour to minute",
        r if r == HOUR | MINUTE | SECOND => " hour to second",
        r if r == MINUTE | SECOND => " minute to second",
        // INTERVAL_FULL_RANGE (0x7fff): no field restriction.
        _ => "",
    };
    if precision != FULL_PRECISION {
        format!("{fields}({precision})")
    } else {
        fields.to_owned()
    }
}

/// Domains over domains and arrays of arrays are followed at most this many catalog rows deep
/// (PostgreSQL has no limit, but a catalog with a cycle must not loop forever). An array level of an
/// array of arrays takes two (the array type, the domain over the inner array type), so this is
/// more than [`MAX_ARRAY_NESTING`] needs.
const MAX_TYPE_HOPS: u32 = 32;

/// Type OID → how its text is parsed and what it is called. Built-in types are always known; user
/// types come from [`TYPE_QUERY`] rows. Pure data: loading it is the caller's business.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeRegistry {
    rows: HashMap<u32, TypeRow>,
    /// Fraction digits of `money` under the server's `lc_monetary` (PostgreSQL's default, 2,
    /// until [`TypeRegistry::set_money_scale`]).
    money_scale: Option<u8>,
}

impl TypeRegistry {
    /// Only the built-in types.
    pub fn builtin() -> Self {
        Self::default()
    }

    /// The built-in types plus the rows of [`TYPE_QUERY`].
    pub fn from_rows<R: Into<TypeRow>>(rows: impl IntoIterator<Item = R>) -> Self {
        let mut reg = Self::default();
        for r in rows {
            reg.insert(r.into());
        }
        reg
    }

    /// The fraction digits `money` has on the server: `scale('0'::money::numeric)`.
    pub fn set_money_scale(&mut self, scale: u8) {
        self.money_scale = Some(scale);
    }

    /// `format` with the server's money scale, at any nesting level.
    fn with_money_scale(&self, format: TextFormat) -> TextFormat {
        let scale = self.money_scale.unwrap_or(2);
        match format {
            TextFormat::Scalar(ScalarKind::Money { .. }) => {
                TextFormat::Scalar(ScalarKind::Money { scale })
            }
            TextFormat::Array { element, delimiter } => {
                TextFormat::array(self.with_money_scale(*element), delimiter)
            }
            other => other,
        }
    }

    /// Adds or replaces one type.
    pub fn insert(&mut self, row: TypeRow) {
        self.rows.insert(row.oid, row);
    }

    /// Number of catalog rows loaded (built-ins not counted).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Whether `oid` is known (statically or from the catalog).
    pub fn contains(&self, oid: u32) -> bool {
        builtin(oid).is_some() || self.rows.contains_key(&oid)
    }

    /// Name and text format of a column of type `oid` with `typmod`.
    pub fn resolve(&self, oid: u32, typmod: i32) -> Result<ColumnType, DecodeError> {
        if let Some(name) = format_builtin_type(oid, typmod) {
            let (_, format) = builtin(oid).ok_or(DecodeError::UnknownType { oid })?;
            let format = self.with_money_scale(format);
            return Ok(ColumnType { name, format });
        }
        let row = self
            .rows
            .get(&oid)
            .ok_or(DecodeError::UnknownType { oid })?;
        Ok(ColumnType {
            name: row.name.clone(),
            format: self.with_money_scale(self.format_of(oid, 0)?),
        })
    }

    /// The text format of a type: domains resolve to their base type (as figoutput's
    /// `getBaseType`), true arrays to the format of their element type, which is an array itself
    /// for an array of a domain over an array type (nested at most [`MAX_ARRAY_NESTING`] deep).
    fn format_of(&self, oid: u32, depth: u32) -> Result<TextFormat, DecodeError> {
        if let Some((_, format)) = builtin(oid) {
            return Ok(format);
        }
        let row = self
            .rows
            .get(&oid)
            .ok_or(DecodeError::UnknownType { oid })?;
        let follow = |next: u32| {
            if depth >= MAX_TYPE_HOPS {
                return Err(DecodeError::BadTypeInfo {
                    oid,
                    reason: "domains or arrays nest too deep (a cycle in the loaded catalog rows?)",
                });
            }
            self.format_of(next, depth + 1)
        };
        match row.typtype {
            b'd' => follow(row.typbasetype),
            b'e' => Ok(TextFormat::Scalar(ScalarKind::Enum)),
            _ if row.typcategory == b'A' && row.typelem != 0 => {
                let format =
                    TextFormat::array(follow(row.typelem)?, self.delimiter_of(row.typelem));
                if format.array_nesting() > MAX_ARRAY_NESTING {
                    return Err(DecodeError::ArraysTooDeep {
                        oid,
                        limit: MAX_ARRAY_NESTING,
                    });
                }
                Ok(format)
            }
            _ => Ok(TextFormat::Scalar(ScalarKind::Other)),
        }
    }

    /// `typdelim` of an array element type; every built-in type above uses `,`.
    fn delimiter_of(&self, oid: u32) -> u8 {
        if builtin(oid).is_some() {
            return b',';
        }
        self.rows.get(&oid).map_or(b',', |r| r.typdelim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(oid: u32, name: &str, typtype: u8, typelem: u32, typbasetype: u32, cat: u8) -> TypeRow {
        TypeRow {
            oid,
            name: name.into(),
            typtype,
            typelem,
            typbasetype,
            typcategory: cat,
            typdelim: b',',
        }
    }

    #[test]
    fn builtin_names_follow_format_type() {
        // Checked against PostgreSQL 15's format_type(oid, typmod).
        let cases = [
            (16, -1, "boolean"),
            (1700, -1, "numeric"),
            (1700, (18 << 16 | 2) + 4, "numeric(18,2)"),
            (1700, (20 << 16 | 2) + 4, "numeric(20,2)"),
            (1042, 7, "character(3)"),
            (1042, -1, "bpchar"),
            (1014, -1, "bpchar[]"),
            (1014, 5, "character(1)[]"),
            (1043, 14, "character varying(10)"),
            (1015, 14, "character varying(10)[]"),
            (1043, -1, "character varying"),
            (1184, 3, "timestamp(3) with time zone"),
            (1184, -1, "timestamp with time zone"),
            (1114, 0, "timestamp(0) without time zone"),
            (1083, -1, "time without time zone"),
            (1266, 2, "time(2) with time zone"),
            (1186, -1, "interval"),
            (1186, 0x7fff_0003, "interval(3)"),
            (
                1186,
                (1 << 2 | 1 << 1) << 16 | 0xffff,
                "interval year to month",
            ),
            (1560, 12, "bit(12)"),
            (1560, -1, "\"bit\""),
            (1562, 12, "bit varying(12)"),
            (1003, -1, "name[]"),
            (1185, 6, "timestamp(6) with time zone[]"),
            (3807, -1, "jsonb[]"),
        ];
        for (oid, typmod, name) in cases {
            assert_eq!(
                format_builtin_type(oid, typmod).as_deref(),
                Some(name),
                "{oid} {typmod}"
            );
        }
        // Negative numeric scale (PostgreSQL 15+): numeric(3,-2).
        let typmod = ((3 << 16) | (-2i32 & 0x7ff)) + 4;
        assert_eq!(format_builtin_type(1700, typmod).unwrap(), "numeric(3,-2)");
    }

    #[test]
    fn unknown_types_are_errors_not_guesses() {
        let reg = TypeRegistry::builtin();
        assert_eq!(
            reg.resolve(16_385, -1),
            Err(DecodeError::UnknownType { oid: 16_385 })
        );
        assert!(reg.contains(23) && !reg.contains(16_385));
    }

    #[test]
    fn catalog_types_resolve_like_figoutput() {
        let reg = TypeRegistry::from_rows([
            row(16_385, "mood", b'e', 0, 0, b'E'),
            row(16_384, "mood[]", b'b', 16_385, 0, b'A'),
            row(16_390, "posint", b'd', 0, 23, b'N'),
            row(16_391, "moods", b'd', 0, 16_384, b'A'),
            row(16_392, "posint[]", b'b', 16_390, 0, b'A'),
            row(600, "point", b'b', 701, 0, b'G'),
            TypeRow {
                typdelim: b';',
                ..row(603, "box", b'b', 600, 0, b'G')
            },
            row(1020, "box[]", b'b', 603, 0, b'A'),
            row(16_400, "loop", b'd', 0, 16_400, b'N'),
        ]);
        let f = |oid| reg.resolve(oid, -1).map(|c| (c.name, c.format));
        use ScalarKind::*;
        assert_eq!(
            f(16_385).unwrap(),
            ("mood".into(), TextFormat::Scalar(Enum))
        );
        let arr = |element, delimiter| TextFormat::array(TextFormat::Scalar(element), delimiter);
        assert_eq!(f(16_384).unwrap(), ("mood[]".into(), arr(Enum, b',')));
        assert_eq!(
            f(16_390).unwrap(),
            ("posint".into(), TextFormat::Scalar(Int4))
        );
        assert_eq!(f(16_391).unwrap(), ("moods".into(), arr(Enum, b',')));
        assert_eq!(f(16_392).unwrap(), ("posint[]".into(), arr(Int4, b',')));
        // point has a typelem but is not an array.
        assert_eq!(f(600).unwrap(), ("point".into(), TextFormat::Scalar(Other)));
        assert_eq!(f(1020).unwrap(), ("box[]".into(), arr(Other, b';')));
        assert!(matches!(f(16_400), Err(DecodeError::BadTypeInfo { .. })));
        // A type tuple straight from tokio-postgres.
        let r: TypeRow = (
            1u32,
            "x".to_owned(),
            b'e' as i8,
            0u32,
            0u32,
            b'E' as i8,
            b',' as i8,
        )
            .into();
        assert_eq!(r.typtype, b'e');
    }

    #[test]
    fn arrays_of_arrays_resolve_to_nested_formats() {
        use ScalarKind::*;
        let reg = TypeRegistry::from_rows([
            // CREATE DOMAIN intlist AS int[]; its array type; a domain over that and its array.
            row(16_385, "intlist", b'd', 0, 1007, b'A'),
            row(16_384, "intlist[]", b'b', 16_385, 0, b'A'),
            row(16_387, "intlists", b'd', 0, 16_384, b'A'),
            row(16_386, "intlists[]", b'b', 16_387, 0, b'A'),
        ]);
        let f = |oid| reg.resolve(oid, -1).map(|c| (c.name, c.format));
        let ints = TextFormat::array(TextFormat::Scalar(Int4), b',');
        assert_eq!(
            f(16_384).unwrap(),
            ("intlist[]".into(), TextFormat::array(ints.clone(), b','))
        );
        assert_eq!(
            f(16_386).unwrap().1,
            TextFormat::array(TextFormat::array(ints, b','), b',')
        );
        assert_eq!(f(16_386).unwrap().1.array_nesting(), 3);
        // The server's money scale reaches inner arrays too (a domain over money[], its array).
        let mut reg = TypeRegistry::from_rows([
            row(16_389, "monies", b'd', 0, 791, b'A'),
            row(16_388, "monies[]", b'b', 16_389, 0, b'A'),
        ]);
        reg.set_money_scale(0);
        assert_eq!(
            reg.resolve(16_388, -1).unwrap().format,
            TextFormat::array(
                TextFormat::array(TextFormat::Scalar(Money { scale: 0 }), b','),
                b','
            )
        );
        // Built in: no catalog rows needed.
        let reg = TypeRegistry::builtin();
        let f = |oid| reg.resolve(oid, -1).map(|c| (c.name, c.format));
        assert_eq!(
            f(22).unwrap(),
            ("int2vector".into(), TextFormat::Vector(Int2))
        );
        assert_eq!(
            f(30).unwrap(),
            ("oidvector".into(), TextFormat::Vector(Other))
        );
        assert_eq!(
            f(1006).unwrap(),
            (
                "int2vector[]".into(),
                TextFormat::array(TextFormat::Vector(Int2), b',')
            )
        );
        assert_eq!(
            f(1013).unwrap(),
            (
                "oidvector[]".into(),
                TextFormat::array(TextFormat::Vector(Other), b',')
            )
        );
    }

    #[test]
    fn array_nesting_is_bounded() {
        // Domains over arrays of domains over arrays …: level n is the array type 20_000 + 2n,
        // over the domain 20_001 + 2n, over the array of level n - 1 (level 0 is integer[]).
        let chain = |levels: u32| {
            let mut rows = Vec::new();
            for n in 1..=levels {
                let below = if n == 1 { 1007 } else { 20_000 + 2 * (n - 1) };
                rows.push(row(20_001 + 2 * n, "d", b'd', 0, below, b'A'));
                rows.push(row(20_000 + 2 * n, "d[]", b'b', 20_001 + 2 * n, 0, b'A'));
            }
            TypeRegistry::from_rows(rows)
        };
        let limit = MAX_ARRAY_NESTING as u32;
        let top = 20_000 + 2 * (limit - 1);
        let format = chain(limit - 1).resolve(top, -1).unwrap().format;
        assert_eq!(format.array_nesting(), MAX_ARRAY_NESTING);
        let top = 20_000 + 2 * limit;
        assert_eq!(
            chain(limit).resolve(top, -1),
            Err(DecodeError::ArraysTooDeep {
                oid: top,
                limit: MAX_ARRAY_NESTING
            })
        );
        // An array that is its own element type (a broken catalog): an error, not a stack overflow.
        let reg = TypeRegistry::from_rows([row(16_400, "loop[]", b'b', 16_400, 0, b'A')]);
        assert!(reg.resolve(16_400, -1).is_err());
    }
}
