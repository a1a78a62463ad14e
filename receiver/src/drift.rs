//! Schema drift: what changed between two definitions of a table, and what to do about it.
//!
//! ```text
//! last recorded definition ─┐
//!                           ├─ diff (by attnum) ─▶ [ColumnChange] ─▶ history row + notification
//! new definition ───────────┘   (RELATION record, a sync's catalog read)      └─ policy: continue | pause
//! ```
//!
//! **Matching columns.** figoutput and the catalog give each column's attnum, which PostgreSQL never
//! reuses: a column dropped and added again under the same name gets a new attnum, so it is a drop
//! plus an add, and a renamed column keeps its attnum. pgoutput sends no attnums; there the columns
//! are matched by the order PostgreSQL keeps them in (attnum order, new columns always last): a
//! name that survives in the same relative order is the same column, a name that reappears after
//! columns that were behind it was dropped and added again, and a column replaced at the same place
//! by one of a new name was renamed (and retyped, if its type differs). Two cases cannot be told
//! apart without attnums: dropping the last column and adding one of the same name and type looks like
//! no change, and swapping the names of two columns of one type reads as one column dropped and added.
//!
//! **What is flagged.** Every change is recorded and notified. A dropped column, a changed type, a
//! rename or a new key is *flagged*: the mirror keeps the old column (its values stay, NULL in new
//! rows), nothing is cast, and under the `pause` policy the table stops until an operator accepts the
//! change. An added column just appears in the mirror. `ALTER TYPE … ADD VALUE` on an enum changes
//! no table (new labels simply arrive as values), so it is no drift.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::model::{Column, Lsn, Relation};

/// One difference between two definitions of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ColumnChange {
    Added {
        column: String,
        #[serde(rename = "type")]
        type_name: String,
    },
    Dropped {
        column: String,
        #[serde(rename = "type")]
        type_name: String,
    },
    TypeChanged {
        column: String,
        from: String,
        to: String,
    },
    Renamed {
        from: String,
        to: String,
    },
    KeyChanged {
        from: Vec<String>,
        to: Vec<String>,
    },
    TableRenamed {
        from: String,
        to: String,
    },
}

impl ColumnChange {
    /// Whether the change needs an owner's review (everything but an added column).
    pub fn flagged(&self) -> bool {
        !matches!(self, ColumnChange::Added { .. })
    }

    /// Whether existing rows may hold other values after the change although no row changed in
    /// the stream: an added column filled by a default or identity (a rewrite, or the catalog's
    /// missing value), a new type (a rewrite), a renamed column (its values under a new name).
    pub fn may_rewrite(&self) -> bool {
        matches!(
            self,
            ColumnChange::Added { .. }
                | ColumnChange::TypeChanged { .. }
                | ColumnChange::Renamed { .. }
        )
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ColumnChange::Added { .. } => "added",
            ColumnChange::Dropped { .. } => "dropped",
            ColumnChange::TypeChanged { .. } => "type_changed",
            ColumnChange::Renamed { .. } => "renamed",
            ColumnChange::KeyChanged { .. } => "key_changed",
            ColumnChange::TableRenamed { .. } => "table_renamed",
        }
    }
}

/// A schema change of one table, as recorded and notified.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SchemaChange {
    pub event: &'static str,
    pub schema: String,
    pub table: String,
    pub relid: u32,
    /// Where in the stream it took effect (`X/Y`), when it came from the stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lsn: Option<String>,
    /// `relation` (a definition in the stream), `ddl` (figoutput's DDL capture) or `sync` (a
    /// snapshot or incremental copy read the catalog).
    pub source: &'static str,
    pub changes: Vec<ColumnChange>,
    /// The DDL statement, for `source = "ddl"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ddl: Option<String>,
    /// Whether any change needs review (see [`ColumnChange::flagged`]).
    pub flagged: bool,
    /// How the mirror is brought back to the source's rows: `recopy` when a change may have
    /// changed existing rows without row changes ([`ColumnChange::may_rewrite`]; the table waits
    /// for a re-copy), absent when it cannot have (or a copy read the rows with the definition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<&'static str>,
    pub detected_at: String,
}

/// Where a definition whose drift is recorded came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// A RELATION record of the stream.
    Relation,
    /// A RELATION record that figoutput's DDL capture explains: the statement text.
    Ddl(&'a str),
    /// The catalog, read by a snapshot or incremental sync.
    Sync,
}

impl Source<'_> {
    pub fn name(self) -> &'static str {
        match self {
            Source::Relation => "relation",
            Source::Ddl(_) => "ddl",
            Source::Sync => "sync",
        }
    }
}

impl SchemaChange {
    pub fn new(
        rel: &Relation,
        lsn: Option<Lsn>,
        source: Source<'_>,
        changes: Vec<ColumnChange>,
    ) -> SchemaChange {
        SchemaChange {
            event: "schema_change",
            schema: rel.schema.clone(),
            table: rel.table.clone(),
            relid: rel.relid,
            lsn: lsn.map(|l| l.to_string()),
            source: source.name(),
            flagged: changes.iter().any(ColumnChange::flagged),
            repair: (!matches!(source, Source::Sync)
                && changes.iter().any(ColumnChange::may_rewrite))
            .then_some("recopy"),
            changes,
            ddl: match source {
                Source::Ddl(text) => Some(text.to_string()),
                _ => None,
            },
            detected_at: now_rfc3339(),
        }
    }

    pub fn name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a schema change serializes")
    }
}

fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    // Microseconds since 2000-01-01, PostgreSQL's epoch, as the datetime module takes them.
    let pg_epoch_offset: i64 = 946_684_800_000_000;
    fig_format::datetime::format_timestamp(now.as_micros() as i64 - pg_epoch_offset, true)
}

/// The changes from `old` to `new` (the same relid), in column order.
pub fn diff(old: &Relation, new: &Relation) -> Vec<ColumnChange> {
    let mut out = Vec::new();
    if (old.schema.as_str(), old.table.as_str()) != (new.schema.as_str(), new.table.as_str()) {
        out.push(ColumnChange::TableRenamed {
            from: format!("{}.{}", old.schema, old.table),
            to: format!("{}.{}", new.schema, new.table),
        });
    }
    let pairs = match_columns(&old.columns, &new.columns);
    let matched_old: BTreeSet<usize> = pairs.iter().map(|&(o, _)| o).collect();
    let matched_new: BTreeSet<usize> = pairs.iter().map(|&(_, n)| n).collect();
    for (i, c) in old.columns.iter().enumerate() {
        if !matched_old.contains(&i) {
            out.push(ColumnChange::Dropped {
                column: c.name.clone(),
                type_name: c.type_name.clone(),
            });
        }
    }
    for &(o, n) in &pairs {
        let (a, b) = (&old.columns[o], &new.columns[n]);
        if a.name != b.name {
            out.push(ColumnChange::Renamed {
                from: a.name.clone(),
                to: b.name.clone(),
            });
        }
        if a.type_oid != b.type_oid || a.type_name != b.type_name {
            out.push(ColumnChange::TypeChanged {
                column: b.name.clone(),
                from: a.type_name.clone(),
                to: b.type_name.clone(),
            });
        }
    }
    for (i, c) in new.columns.iter().enumerate() {
        if !matched_new.contains(&i) {
            out.push(ColumnChange::Added {
                column: c.name.clone(),
                type_name: c.type_name.clone(),
            });
        }
    }
    let keys = |r: &Relation| -> Vec<String> {
        r.columns
            .iter()
            .filter(|c| c.key)
            .map(|c| c.name.clone())
            .collect()
    };
    let (ka, kb) = (keys(old), keys(new));
    // A key column renamed is a rename, not a new key.
    let renamed = |k: &Vec<String>| -> Vec<String> {
        k.iter()
            .map(|name| {
                pairs
                    .iter()
                    .find(|&&(o, _)| old.columns[o].name == *name)
                    .map_or(name.clone(), |&(_, n)| new.columns[n].name.clone())
            })
            .collect()
    };
    if renamed(&ka) != kb {
        out.push(ColumnChange::KeyChanged { from: ka, to: kb });
    }
    out
}

/// Pairs (old position, new position) of the columns that are the same column.
fn match_columns(old: &[Column], new: &[Column]) -> Vec<(usize, usize)> {
    let numbered = |cols: &[Column]| cols.iter().all(|c| c.attnum.is_some());
    if numbered(old) && numbered(new) {
        return old
            .iter()
            .enumerate()
            .filter_map(|(o, c)| {
                new.iter()
                    .position(|n| n.attnum == c.attnum)
                    .map(|n| (o, n))
            })
            .collect();
    }
    // Without attnums: new columns always come last, so the new definition is some columns of the
    // old one, in their order, followed by the added ones. The longest such prefix wins; in it a
    // column matches the old column of its name, or, if its name is new, the next old column of the
    // same type whose name is gone (a rename).
    (0..=new.len())
        .rev()
        .find_map(|m| align(old, new, m))
        .unwrap_or_default()
}

/// Matches `new[..m]` to `old` in order, or `None` when it cannot be.
fn align(old: &[Column], new: &[Column], m: usize) -> Option<Vec<(usize, usize)>> {
    let mut pairs = Vec::with_capacity(m);
    let mut from = 0;
    for (j, c) in new[..m].iter().enumerate() {
        let known = old.iter().any(|o| o.name == c.name);
        let gone = |o: &Column| !new.iter().any(|n| n.name == o.name);
        let rest = &old[from..];
        let p = if known {
            rest.iter().position(|o| o.name == c.name)
        } else {
            // A new name in place of a gone column: renamed (retyped too, when no gone column of
            // its type is left; new columns only ever come last, so it cannot be an addition).
            rest.iter()
                .position(|o| o.type_oid == c.type_oid && gone(o))
                .or_else(|| rest.iter().position(gone))
        }? + from;
        pairs.push((p, j));
        from = p + 1;
    }
    Some(pairs)
}

/// What a sink needs to follow drift: the policy, and where notifications go.
pub struct Watch {
    pub policy: Policy,
    pub notifier: crate::notify::Notifier,
}

impl Watch {
    /// Whether `change` stops its table (flagged, and the table's policy is `pause`).
    pub fn pauses(&self, change: &SchemaChange) -> bool {
        change.flagged && self.policy.pauses(&change.name())
    }
}

/// What happens to a table whose schema changed in a way that needs review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnChange {
    /// Record it, notify, keep going (the mirror keeps old columns; nothing is cast).
    #[default]
    Continue,
    /// Record and notify, then stop: a CDC stream stops before the transaction carrying the change
    /// (nothing from it on is acknowledged, so nothing is lost) and the receiver exits non-zero; a
    /// snapshot or incremental table skips its syncs. Accept with `--accept-schema-change TABLE`.
    Pause,
}

/// The drift policy of every table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub default: OnChange,
    /// `schema.table` names with their own policy.
    pub tables: Vec<(String, OnChange)>,
    /// Tables whose pending flagged change an operator accepted for this run.
    pub accepted: Vec<String>,
}

impl Policy {
    /// Whether a flagged change of `table` stops it.
    pub fn pauses(&self, table: &str) -> bool {
        if self.accepted.iter().any(|a| a == table) {
            return false;
        }
        let policy = self
            .tables
            .iter()
            .find(|(t, _)| t == table)
            .map_or(self.default, |&(_, p)| p);
        policy == OnChange::Pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, oid: u32, attnum: Option<i16>) -> Column {
        Column {
            name: name.into(),
            type_name: match oid {
                23 => "integer".into(),
                25 => "text".into(),
                20 => "bigint".into(),
                _ => format!("t{oid}"),
            },
            type_oid: oid,
            key: name == "id",
            not_null: false,
            attnum,
        }
    }

    fn rel(cols: Vec<Column>) -> Relation {
        Relation {
            relid: 1,
            schema: "public".into(),
            table: "t".into(),
            columns: cols,
        }
    }

    fn kinds(c: &[ColumnChange]) -> Vec<&'static str> {
        c.iter().map(ColumnChange::kind).collect()
    }

    #[test]
    fn by_attnum() {
        let old = rel(vec![
            col("id", 23, Some(1)),
            col("a", 25, Some(2)),
            col("b", 23, Some(3)),
        ]);
        // b dropped and added again (new attnum), a renamed to c (same attnum), d added.
        let new = rel(vec![
            col("id", 23, Some(1)),
            col("c", 25, Some(2)),
            col("b", 23, Some(4)),
            col("d", 20, Some(5)),
        ]);
        let d = diff(&old, &new);
        assert_eq!(
            kinds(&d),
            vec!["dropped", "renamed", "added", "added"],
            "{d:?}"
        );
        assert!(d
            .iter()
            .any(|c| matches!(c, ColumnChange::Dropped { column, .. } if column == "b")));
        assert!(d
            .iter()
            .any(|c| matches!(c, ColumnChange::Added { column, .. } if column == "b")));
    }

    #[test]
    fn type_change_keeps_the_column() {
        let old = rel(vec![col("id", 23, Some(1)), col("a", 23, Some(2))]);
        let new = rel(vec![col("id", 23, Some(1)), col("a", 20, Some(2))]);
        assert_eq!(
            diff(&old, &new),
            vec![ColumnChange::TypeChanged {
                column: "a".into(),
                from: "integer".into(),
                to: "bigint".into()
            }]
        );
        let old = rel(vec![col("id", 23, None), col("a", 23, None)]);
        let new = rel(vec![col("id", 23, None), col("a", 20, None)]);
        assert_eq!(kinds(&diff(&old, &new)), vec!["type_changed"]);
    }

    #[test]
    fn without_attnums_order_tells_a_re_add_from_a_survivor() {
        // a dropped and added again: it moves behind b.
        let old = rel(vec![
            col("id", 23, None),
            col("a", 25, None),
            col("b", 23, None),
        ]);
        let new = rel(vec![
            col("id", 23, None),
            col("b", 23, None),
            col("a", 25, None),
        ]);
        assert_eq!(kinds(&diff(&old, &new)), vec!["dropped", "added"]);
        // Renamed in place.
        let new = rel(vec![
            col("id", 23, None),
            col("z", 25, None),
            col("b", 23, None),
        ]);
        assert_eq!(
            diff(&old, &new),
            vec![ColumnChange::Renamed {
                from: "a".into(),
                to: "z".into()
            }]
        );
        // Added at the end, dropped in the middle.
        let new = rel(vec![
            col("id", 23, None),
            col("b", 23, None),
            col("c", 25, None),
        ]);
        assert_eq!(kinds(&diff(&old, &new)), vec!["dropped", "added"]);
        assert!(diff(&old, &old).is_empty());
        // Renamed and retyped in the middle: the column after it survives.
        let new = rel(vec![
            col("id", 23, None),
            col("z", 20, None),
            col("b", 23, None),
        ]);
        assert_eq!(kinds(&diff(&old, &new)), vec!["renamed", "type_changed"]);
    }

    #[test]
    fn key_changes_and_flags() {
        let old = rel(vec![col("id", 23, Some(1)), col("a", 25, Some(2))]);
        let mut new = old.clone();
        new.columns[1].key = true;
        let d = diff(&old, &new);
        assert_eq!(kinds(&d), vec!["key_changed"]);
        assert!(d[0].flagged());
        let added = ColumnChange::Added {
            column: "x".into(),
            type_name: "text".into(),
        };
        assert!(!added.flagged());
    }

    #[test]
    fn the_json_document_names_table_changes_and_flag() {
        let old = rel(vec![col("id", 23, Some(1)), col("a", 25, Some(2))]);
        let new = rel(vec![col("id", 23, Some(1))]);
        let c = SchemaChange::new(
            &new,
            Some(Lsn(0x1_0000_0010)),
            Source::Relation,
            diff(&old, &new),
        );
        let v: serde_json::Value = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(v["event"], "schema_change");
        assert_eq!(v["table"], "t");
        assert_eq!(v["lsn"], "1/10");
        assert_eq!(v["flagged"], true);
        assert_eq!(v["changes"][0]["kind"], "dropped");
        assert_eq!(v["changes"][0]["column"], "a");
        assert!(v["detected_at"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn policy_pauses_per_table_until_accepted() {
        let mut p = Policy {
            default: OnChange::Continue,
            tables: vec![("public.t".into(), OnChange::Pause)],
            accepted: vec![],
        };
        assert!(p.pauses("public.t"));
        assert!(!p.pauses("public.u"));
        p.accepted.push("public.t".into());
        assert!(!p.pauses("public.t"));
    }
}
