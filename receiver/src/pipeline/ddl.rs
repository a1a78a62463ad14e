//! The DDL statements behind schema changes: figoutput's DDL capture (`figoutput.ddl` records)
//! names the tables each statement touched; the statement text is kept per table until that table's
//! next definition arrives, which it then explains (recorded as `_fig_schema_changes.ddl`).
//!
//! The capture arrives where the statement ran, before the RELATION record of the first change that
//! uses the new definition (possibly in a later transaction), so texts wait here across
//! transactions. A definition that arrives unchanged (`CREATE INDEX`, `SET STATISTICS`) takes and
//! drops the waiting texts: they explained nothing a sink can see. Memory is bounded: DDL on tables
//! that are never replicated would otherwise accumulate for the life of the process.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

/// Tables with statements waiting, at most; past it the oldest-noted table's texts are dropped.
const MAX_TABLES: usize = 1024;
/// Statements kept per table (the newest).
const MAX_PER_TABLE: usize = 8;
/// Bytes kept of one statement text (DDL scripts can be long); longer ones are cut with a marker.
const MAX_TEXT: usize = 16 * 1024;

/// The part of a DDL capture payload (docs/FIGOUTPUT.md, "DDL capture") this needs.
#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    event: String,
    /// The statement, when the capture kept it (the query string held it alone, and it holds no
    /// secrets by its kind); else null.
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    commands: Vec<Command>,
}

#[derive(Deserialize)]
struct Command {
    #[serde(default)]
    object_type: String,
    objid: Option<u64>,
    #[serde(default)]
    identity: Option<String>,
}

/// Statement texts waiting for the next definition of their table, per relid.
#[derive(Debug, Clone, Default)]
pub struct PendingDdl {
    texts: HashMap<u32, (u64, Vec<String>)>,
    /// Counts notes, to find the oldest-noted table when full.
    clock: u64,
}

impl PendingDdl {
    /// Notes one DDL capture payload. An unreadable payload is logged and skipped: the text only
    /// explains a change the RELATION diff finds anyway.
    pub fn note(&mut self, payload: &str) {
        let p: Payload = match serde_json::from_str(payload) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "a figoutput DDL record is not the JSON document this receiver reads; its statement text is not recorded (schema changes are still detected from the RELATION records)");
                return;
            }
        };
        let statement = p.query.as_deref().map(|q| cut(q.trim()));
        for c in &p.commands {
            let Some(relid) = c.objid.and_then(|o| u32::try_from(o).ok()) else {
                continue;
            };
            // Without the text: the command and what it changed (`ALTER TABLE public.t`).
            let query = statement.clone().unwrap_or_else(|| {
                let what = c.identity.as_deref().unwrap_or_default();
                format!("{} {what}", p.tag).trim().to_string()
            });
            match c.object_type.as_str() {
                "table" if p.event == "sql_drop" => {
                    self.texts.remove(&relid);
                }
                "table" | "table column" | "foreign table" | "foreign table column" => {
                    self.push(relid, &query)
                }
                _ => {}
            }
        }
    }

    fn push(&mut self, relid: u32, query: &str) {
        self.clock += 1;
        if !self.texts.contains_key(&relid) && self.texts.len() >= MAX_TABLES {
            if let Some(oldest) = self
                .texts
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(r, _)| *r)
            {
                self.texts.remove(&oldest);
            }
        }
        let (at, texts) = self.texts.entry(relid).or_default();
        *at = self.clock;
        // `ALTER TABLE … DROP COLUMN` is captured twice (sql_drop, then ddl_command_end).
        if texts.last().map(String::as_str) != Some(query) {
            if texts.len() == MAX_PER_TABLE {
                texts.remove(0);
            }
            texts.push(query.to_string());
        }
    }

    /// Takes the texts waiting for `relid`, one statement per line, oldest first.
    pub fn take(&mut self, relid: u32) -> Option<Arc<str>> {
        let (_, texts) = self.texts.remove(&relid)?;
        Some(Arc::from(texts.join("\n")))
    }
}

fn cut(text: &str) -> String {
    if text.len() <= MAX_TEXT {
        return text.to_string();
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} …(cut at {MAX_TEXT} bytes)", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(event: &str, query: &str, commands: &[(&str, u64)]) -> String {
        serde_json::json!({
            "version": 1,
            "event": event,
            "tag": "ALTER TABLE",
            "query": query,
            "commands": commands
                .iter()
                .map(|(t, o)| serde_json::json!({"object_type": t, "objid": o}))
                .collect::<Vec<_>>(),
        })
        .to_string()
    }

    #[test]
    fn a_capture_without_the_text_is_explained_by_its_command_and_object() {
        let mut p = PendingDdl::default();
        p.note(
            &serde_json::json!({
                "version": 1, "event": "ddl_command_end", "tag": "ALTER TABLE", "query": null,
                "commands": [{"object_type": "table", "objid": 7, "identity": "public.t"}],
            })
            .to_string(),
        );
        assert_eq!(p.take(7).as_deref(), Some("ALTER TABLE public.t"));
    }

    #[test]
    fn a_statement_waits_for_its_table_and_is_taken_once() {
        let mut p = PendingDdl::default();
        p.note(&payload(
            "ddl_command_end",
            "ALTER TABLE t ADD c int",
            &[("table", 7)],
        ));
        assert_eq!(p.take(8), None);
        assert_eq!(p.take(7).as_deref(), Some("ALTER TABLE t ADD c int"));
        assert_eq!(p.take(7), None);
    }

    #[test]
    fn a_dropped_column_captured_twice_is_one_line_and_statements_keep_their_order() {
        let mut p = PendingDdl::default();
        let drop = "ALTER TABLE t DROP COLUMN b";
        p.note(&payload("sql_drop", drop, &[("table column", 7)]));
        p.note(&payload("ddl_command_end", drop, &[("table", 7)]));
        p.note(&payload(
            "ddl_command_end",
            "ALTER TABLE t ADD b text",
            &[("table", 7)],
        ));
        assert_eq!(
            p.take(7).as_deref(),
            Some("ALTER TABLE t DROP COLUMN b\nALTER TABLE t ADD b text")
        );
    }

    #[test]
    fn objects_that_are_not_tables_and_dropped_tables_leave_nothing_waiting() {
        let mut p = PendingDdl::default();
        p.note(&payload(
            "ddl_command_end",
            "CREATE INDEX i ON t (a)",
            &[("index", 9)],
        ));
        p.note(&payload(
            "ddl_command_end",
            "ALTER TABLE t ADD c int",
            &[("table", 7)],
        ));
        p.note(&payload("sql_drop", "DROP TABLE t", &[("table", 7)]));
        assert_eq!(p.take(9), None);
        assert_eq!(p.take(7), None);
    }

    #[test]
    fn unreadable_payloads_are_skipped() {
        let mut p = PendingDdl::default();
        p.note("not json");
        p.note(r#"{"commands": [{"object_type": "table", "objid": -1}]}"#);
        p.note(r#"{"commands": "nope"}"#);
        assert!(p.texts.is_empty());
    }

    #[test]
    fn memory_is_bounded_in_tables_statements_and_text() {
        let mut p = PendingDdl::default();
        for relid in 0..(MAX_TABLES as u64 + 10) {
            p.note(&payload(
                "ddl_command_end",
                "ALTER TABLE x ADD y int",
                &[("table", relid)],
            ));
        }
        assert_eq!(p.texts.len(), MAX_TABLES);
        assert_eq!(p.take(0), None, "the oldest-noted table made room");
        assert!(p.take(MAX_TABLES as u32 + 9).is_some());
        for i in 0..20 {
            p.note(&payload(
                "ddl_command_end",
                &format!("ALTER {i}"),
                &[("table", 5000)],
            ));
        }
        let kept = p.take(5000).unwrap();
        assert_eq!(kept.lines().count(), MAX_PER_TABLE);
        assert!(kept.ends_with("ALTER 19"));
        let long = "é".repeat(MAX_TEXT);
        p.note(&payload("ddl_command_end", &long, &[("table", 1)]));
        let t = p.take(1).unwrap();
        assert!(
            t.len() < MAX_TEXT + 40 && t.ends_with("bytes)"),
            "{}",
            t.len()
        );
    }
}
