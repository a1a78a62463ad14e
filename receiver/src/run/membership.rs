//! Which streamed tables left the stream and came back: their changes made meanwhile were never
//! streamed, so their mirrors need a re-copy.
//!
//! The re-copier's scans record, beside the sink (`PATH.members`), each streamed table with what
//! made it part of the publication ([`crate::sync::catalog::memberships`]). A later scan finds a
//! table that left the stream and came back when
//! - it is streamed now but was not at the last scan (it left, by the publication or the include
//!   list, and came back in between), or
//! - what makes it a member changed (`ALTER PUBLICATION … DROP TABLE` then `ADD TABLE` makes a new
//!   catalog row, even when both happened between two scans or while no receiver ran).
//!
//! The first scan of a sink only records. The file is rewritten whole (temporary file created
//! exclusively, renamed over it) by the one process that holds the sink's lock.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::sink::{io_err, SinkError};

/// Each streamed table, `(schema, table)`, with what makes it a member (empty without a
/// publication: a table list).
pub type Members = HashMap<(String, String), String>;

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
            (Some(s), Some(n), Some(m)) => {
                out.insert((s, n), m);
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
    list.sort();
    let doc = serde_json::json!({
        "format": 1,
        "tables": list
            .iter()
            .map(|((s, t), m)| serde_json::json!({"schema": s, "table": t, "member": m}))
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

/// The tables of `now` that left the stream and came back since `before` was recorded.
pub fn came_back(before: &Members, now: &Members) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = now
        .iter()
        .filter(|(t, m)| before.get(*t).is_none_or(|b| b != *m))
        .map(|(t, _)| t.clone())
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(list: &[(&str, &str)]) -> Members {
        list.iter()
            .map(|(t, m)| (("public".to_string(), t.to_string()), m.to_string()))
            .collect()
    }

    #[test]
    fn a_table_back_or_with_a_new_membership_is_found_and_the_record_round_trips() {
        let before = members(&[("a", "r1"), ("b", "r2")]);
        // b dropped and added back (new row), c new to the stream, a unchanged.
        let now = members(&[("a", "r1"), ("b", "r9"), ("c", "r3")]);
        assert_eq!(
            came_back(&before, &now),
            vec![
                ("public".to_string(), "b".to_string()),
                ("public".to_string(), "c".to_string())
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        let sink = dir.path().join("s.sqlite");
        assert_eq!(recorded(&sink).unwrap(), None);
        record(&sink, &now).unwrap();
        assert_eq!(recorded(&sink).unwrap(), Some(now));
    }
}
