//! Which streamed tables left the stream and came back (their changes made meanwhile were never
//! streamed), or use an enum or composite type whose shape changed (rows read differently now,
//! with no row change in the WAL): their mirrors need a re-copy.
//!
//! The re-copier's scans record, beside the sink (`PATH.members`), each streamed table with what
//! made it part of the publication ([`crate::sync::catalog::memberships`]). A later scan finds a
//! table that left the stream and came back when
//! - it is streamed now but was not at the last scan (it left, by the publication or the include
//!   list, and came back in between), or
//! - what makes it a member changed (`ALTER PUBLICATION … DROP TABLE` then `ADD TABLE` makes a new
//!   catalog row, even when both happened between two scans or while no receiver ran), or
//! - the labels of an enum or the attributes of a composite type its columns use changed
//!   (`ALTER TYPE … RENAME VALUE`, `ADD ATTRIBUTE`).
//!
//! The first scan of a sink only records. The file is rewritten whole (temporary file created
//! exclusively, renamed over it) by the one process that holds the sink's lock.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::sink::{io_err, SinkError};

/// What a scan records of one streamed table.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Member {
    /// What makes it part of the publication (empty without one: a table list).
    pub member: String,
    /// The shapes of the enum and composite types its columns use
    /// ([`crate::sync::catalog::type_shapes`]); `None` in a record made before they were kept.
    pub types: Option<String>,
}

/// Each streamed table, `(schema, table)`, with what a scan records of it.
pub type Members = HashMap<(String, String), Member>;

pub const TYPES_CHANGED: &str = "an enum or composite type its columns use changed (ALTER TYPE … RENAME VALUE, ADD or DROP ATTRIBUTE): rows written before read differently now without any row change in the WAL; a re-copy settles it";

pub const LEFT_AND_CAME_BACK: &str = "the table left the stream (dropped from the publication or the include list) and came back; changes made while it was out were never streamed: a re-copy settles it";

fn path_of(sink: &Path) -> PathBuf {
    let mut s = sink.as_os_str().to_owned();
    s.push(".members");
    PathBuf::from(s)
}

/// The members the last scan recorded beside `sink` (`None`: no scan recorded any).
pub fn recorded(sink: &Path) -> Result<Option<Members>, SinkError> {
    let path = path_of(sink);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path, "reading the streamed tables' record")(e)),
    };
    let bad = |reason: String| SinkError::BadCheckpoint {
        path: path.clone(),
        reason,
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let list = v["tables"]
        .as_array()
        .ok_or_else(|| bad("no `tables` list".into()))?;
    let mut out = Members::new();
    for t in list {
        let text = |k: &str| t[k].as_str().map(str::to_owned);
        match (text("schema"), text("table"), text("member")) {
            (Some(s), Some(n), Some(member)) => {
                out.insert(
                    (s, n),
                    Member {
                        member,
                        types: text("types"),
                    },
                );
            }
            _ => {
                return Err(bad(format!(
                    "an entry without schema, table or member: {t}"
                )))
            }
        }
    }
    Ok(Some(out))
}

/// Records `members` beside `sink`.
pub fn record(sink: &Path, members: &Members) -> Result<(), SinkError> {
    let path = path_of(sink);
    let mut list: Vec<_> = members.iter().collect();
    list.sort_by(|a, b| a.0.cmp(b.0));
    let doc = serde_json::json!({
        "format": 1,
        "tables": list
            .iter()
            .map(|((s, t), m)| {
                serde_json::json!({"schema": s, "table": t, "member": m.member, "types": m.types})
            })
            .collect::<Vec<_>>(),
    });
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        // A predictable name: whatever is there (a crash, or planted) is removed, never followed.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all((doc.to_string() + "\n").as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    };
    write().map_err(io_err(&path, "recording the streamed tables"))
}

/// The tables of `now` that left the stream and came back since `before` was recorded, then those
/// whose types changed shape, each with its reason.
pub fn changed(before: &Members, now: &Members) -> Vec<((String, String), &'static str)> {
    let mut out: Vec<((String, String), &'static str)> = now
        .iter()
        .filter_map(|(t, m)| {
            let Some(b) = before.get(t) else {
                return Some((t.clone(), LEFT_AND_CAME_BACK));
            };
            if b.member != m.member {
                return Some((t.clone(), LEFT_AND_CAME_BACK));
            }
            match (&b.types, &m.types) {
                (Some(was), Some(is)) if was != is => Some((t.clone(), TYPES_CHANGED)),
                _ => None,
            }
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(list: &[(&str, &str, Option<&str>)]) -> Members {
        list.iter()
            .map(|(t, m, ty)| {
                let member = Member {
                    member: m.to_string(),
                    types: ty.map(str::to_owned),
                };
                (("public".to_string(), t.to_string()), member)
            })
            .collect()
    }

    #[test]
    fn a_table_back_with_a_new_membership_or_new_type_shapes_is_found_and_the_record_round_trips() {
        let before = members(&[
            ("a", "r1", Some("")),
            ("b", "r2", Some("")),
            ("d", "r4", Some("e=1")),
            ("old", "r5", None),
        ]);
        // b dropped and added back (new row), c new to the stream, d's enum changed, a unchanged,
        // `old` recorded before types were kept: not compared.
        let now = members(&[
            ("a", "r1", Some("")),
            ("b", "r9", Some("")),
            ("c", "r3", Some("")),
            ("d", "r4", Some("e=2")),
            ("old", "r5", Some("e=7")),
        ]);
        let t = |n: &str| ("public".to_string(), n.to_string());
        assert_eq!(
            changed(&before, &now),
            vec![
                (t("b"), LEFT_AND_CAME_BACK),
                (t("c"), LEFT_AND_CAME_BACK),
                (t("d"), TYPES_CHANGED)
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        let sink = dir.path().join("s.sqlite");
        assert_eq!(recorded(&sink).unwrap(), None);
        record(&sink, &now).unwrap();
        assert_eq!(recorded(&sink).unwrap(), Some(now));
    }
}
