//! Plugin options, parsed once at startup into a typed struct.
//!
//! Options come from `START_REPLICATION ... ("name" 'value', ...)` or from the SQL decoding functions
//! (`pg_logical_slot_get_binary_changes(slot, NULL, NULL, 'name', 'value', ...)`). This module is pure
//! (no PostgreSQL calls) so every rule here is unit-tested; an unknown or malformed option is an error
//! that names the option, raised by the caller as a PostgreSQL ERROR.

use crate::table_filter::{parse_name_list, TablePattern};
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub include_tables: Vec<TablePattern>,
    pub exclude_tables: Vec<TablePattern>,
    /// Only changes of tables in one of these publications (and only the actions they publish).
    pub publications: Vec<String>,
    pub skip_empty_xacts: bool,
    pub include_origin: bool,
    /// `origin = none`: drop changes that were replicated from elsewhere (avoids loops).
    pub only_local_origin: bool,
    pub include_generated: bool,
    /// Stream large in-progress transactions (PostgreSQL 14+) when the server decides to.
    pub streaming: bool,
    /// Records are gathered into writes of about this many bytes (0: one write per change, with
    /// the BEGIN and RELATION records that precede it).
    pub write_batch_bytes: usize,
    /// Test aid (cargo feature `failpoints` only): raise an ERROR (through a Rust panic) at the
    /// N-th change of the session. Without the feature the option is unknown.
    #[cfg(feature = "failpoints")]
    pub fail_after_changes: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            include_tables: Vec::new(),
            exclude_tables: Vec::new(),
            publications: Vec::new(),
            skip_empty_xacts: true,
            include_origin: false,
            only_local_origin: false,
            include_generated: false,
            streaming: true,
            write_batch_bytes: 64 * 1024,
            #[cfg(feature = "failpoints")]
            fail_after_changes: None,
        }
    }
}

pub const KNOWN: &[&str] = &[
    "format_version",
    "include_tables",
    "exclude_tables",
    "publication_names",
    "skip_empty_xacts",
    "include_origin",
    "origin",
    "include_generated",
    "streaming",
    "write_batch_bytes",
    #[cfg(feature = "failpoints")]
    "fail_after_changes",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionError {
    pub option: String,
    pub problem: String,
}

impl fmt::Display for OptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "figoutput option \"{}\": {}", self.option, self.problem)
    }
}

impl Options {
    /// Parses `(name, value)` pairs; a value of `None` means the option was given without a value.
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<Self, OptionError> {
        let mut o = Options::default();
        let mut version_given = false;
        for (name, value) in pairs {
            let err = |problem: String| OptionError {
                option: name.to_string(),
                problem,
            };
            let need = || value.ok_or_else(|| err("needs a value".into()));
            match name {
                "format_version" => {
                    let v = need()?;
                    if v.trim() != fig_format::FORMAT_VERSION.to_string() {
                        return Err(err(format!(
                            "version {v:?} is not supported; this plugin writes version {}",
                            fig_format::FORMAT_VERSION
                        )));
                    }
                    version_given = true;
                }
                "include_tables" => {
                    o.include_tables = TablePattern::parse_list(need()?).map_err(err)?
                }
                "exclude_tables" => {
                    o.exclude_tables = TablePattern::parse_list(need()?).map_err(err)?
                }
                "publication_names" => {
                    o.publications = parse_name_list(need()?).map_err(err)?;
                    if o.publications.is_empty() {
                        return Err(err("names no publication".into()));
                    }
                }
                "skip_empty_xacts" => o.skip_empty_xacts = parse_bool(value).map_err(err)?,
                "include_origin" => o.include_origin = parse_bool(value).map_err(err)?,
                "include_generated" => o.include_generated = parse_bool(value).map_err(err)?,
                "streaming" => o.streaming = parse_bool(value).map_err(err)?,
                "origin" => {
                    o.only_local_origin = match need()?.to_ascii_lowercase().as_str() {
                        "any" => false,
                        "none" => true,
                        other => {
                            return Err(err(format!("expected \"any\" or \"none\", got {other:?}")))
                        }
                    }
                }
                "write_batch_bytes" => {
                    o.write_batch_bytes = parse_uint(need()?).map_err(err)?;
                    if o.write_batch_bytes > 64 * 1024 * 1024 {
                        return Err(err("must be at most 67108864 (64 MiB)".into()));
                    }
                }
                #[cfg(feature = "failpoints")]
                "fail_after_changes" => {
                    o.fail_after_changes = Some(parse_uint(need()?).map_err(err)? as u64)
                }
                _ => {
                    return Err(err(format!(
                        "unknown option; the options figoutput knows are: {}",
                        KNOWN.join(", ")
                    )))
                }
            }
        }
        let _ = version_given; // absent means "the current version"; receivers should always send it
        Ok(o)
    }
}

fn parse_bool(v: Option<&str>) -> Result<bool, String> {
    // Like PostgreSQL's boolean options: a bare option name means true.
    let Some(v) = v else { return Ok(true) };
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" | "t" => Ok(true),
        "false" | "off" | "no" | "0" | "f" => Ok(false),
        other => Err(format!(
            "expected a boolean (true/false, on/off), got {other:?}"
        )),
    }
}

fn parse_uint(v: &str) -> Result<usize, String> {
    v.trim()
        .parse::<usize>()
        .map_err(|_| format!("expected a non-negative integer, got {v:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, Option<&str>)]) -> Result<Options, OptionError> {
        Options::parse(pairs.iter().copied())
    }

    #[test]
    fn defaults() {
        let o = parse(&[]).unwrap();
        assert!(o.skip_empty_xacts && o.streaming && !o.include_origin && !o.include_generated);
        assert_eq!(o.write_batch_bytes, 65536);
    }

    #[test]
    fn parses_every_option() {
        let o = parse(&[
            ("format_version", Some("1")),
            ("include_tables", Some("public.*, \"Sales\".\"Order,s\"")),
            ("exclude_tables", Some("public.audit")),
            ("publication_names", Some("pub_a,\"Pub B\"")),
            ("skip_empty_xacts", Some("off")),
            ("include_origin", None),
            ("origin", Some("none")),
            ("include_generated", Some("true")),
            ("streaming", Some("false")),
            ("write_batch_bytes", Some("0")),
        ])
        .unwrap();
        assert_eq!(o.include_tables.len(), 2);
        assert_eq!(
            o.publications,
            vec!["pub_a".to_string(), "Pub B".to_string()]
        );
        assert!(
            !o.skip_empty_xacts && o.include_origin && o.only_local_origin && o.include_generated
        );
        assert!(!o.streaming);
        assert_eq!(o.write_batch_bytes, 0);
    }

    /// A production build (no `failpoints` feature) cannot be told to fail: the test option is
    /// refused like any unknown option, and not offered in the list of known ones.
    #[cfg(not(feature = "failpoints"))]
    #[test]
    fn fail_after_changes_is_an_unknown_option_without_the_failpoints_feature() {
        let e = parse(&[("fail_after_changes", Some("3"))]).unwrap_err();
        assert_eq!(e.option, "fail_after_changes");
        let text = e.to_string();
        assert!(text.contains("unknown option"), "{text}");
        assert!(
            !text
                .split("knows are:")
                .nth(1)
                .unwrap()
                .contains("fail_after_changes"),
            "{text}"
        );
    }

    #[cfg(feature = "failpoints")]
    #[test]
    fn fail_after_changes_parses_with_the_failpoints_feature() {
        assert_eq!(
            parse(&[("fail_after_changes", Some("3"))])
                .unwrap()
                .fail_after_changes,
            Some(3)
        );
        assert!(parse(&[("fail_after_changes", None)]).is_err());
    }

    #[test]
    fn errors_name_the_option() {
        for (name, value, needle) in [
            ("colour", Some("blue"), "unknown option"),
            ("format_version", Some("2"), "not supported"),
            ("skip_empty_xacts", Some("maybe"), "boolean"),
            ("write_batch_bytes", Some("-1"), "non-negative"),
            ("origin", Some("elsewhere"), "\"any\" or \"none\""),
            ("publication_names", None, "needs a value"),
            ("include_tables", Some("a.b.c"), "schema.table"),
        ] {
            let e = parse(&[(name, value)]).unwrap_err();
            assert_eq!(e.option, name);
            assert!(e.to_string().contains(needle), "{e}");
            assert!(e.to_string().contains(name), "{e}");
        }
    }
}
