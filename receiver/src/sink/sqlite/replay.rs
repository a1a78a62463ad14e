//! Replaying a table's change history onto its mirror: how a re-copy taken at one point of the
//! stream is brought to the point the sink has reached (`load.rs`, resync loads).
//!
//! ```text
//! re-copy read at L (a snapshot exported with a temporary slot's consistent point L)
//! sink checkpoint C ≥ L: every transaction ending at or before C is in _fig_changes
//!   mirror := the copy; then every history row of the table with commit_lsn ≥ L, in
//!   (commit_lsn, ordinal) order, applied as the stream applied it (`apply` in sqlite.rs)
//!   ⇒ mirror = the source table as of C
//! ```
//!
//! Why it is exact: the snapshot holds every transaction whose commit record lies before L and none
//! after it (that is what a slot's consistent point means; the initial copy relies on the same
//! rule), and the history holds every change of the table the stream delivered, applied or not
//! (a table out of sync keeps recording). Unchanged TOAST columns the stream could not fill are
//! absent from a history row's `after`; here they are filled from the replayed mirror, which is
//! exact at that point, and a gap that still cannot be filled fails the replay, never made up.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rusqlite::Connection;

use super::mirror::{self, quote, Plan};
use super::statements::Statements;
use super::{apply, lsn_i64, sql_err, values};
use crate::model::{Change, Lsn, Op, Relation, Value};
use crate::sink::SinkError;

/// A definition of the table from `_fig_schema`, effective from (lsn, ordinal).
struct Definition {
    from: (i64, i64),
    relation: Arc<Relation>,
}

/// Applies to `rel`'s mirror every history row of its table with `commit_lsn ≥ from`. Returns the
/// number of changes replayed.
pub(super) fn replay(
    conn: &Connection,
    path: &Path,
    rel: &Arc<Relation>,
    from: Lsn,
) -> Result<u64, SinkError> {
    let name = format!("{}.{}", rel.schema, rel.table);
    let err = |what: &str| {
        let what = format!("{what} of {name}");
        move |e| sql_err(path, what.clone(), e)
    };
    let definitions =
        definitions(conn, &rel.schema, &rel.table).map_err(err("reading the definitions"))?;
    let mut stmt = conn
        .prepare(
            "SELECT commit_lsn, ordinal, xid, op, before, after, partition FROM _fig_changes \
             WHERE schema = ?1 AND \"table\" = ?2 AND commit_lsn >= ?3 ORDER BY commit_lsn, ordinal",
        )
        .map_err(err("reading the history"))?;
    let mut rows = stmt
        .query(rusqlite::params![rel.schema, rel.table, lsn_i64(from)?])
        .map_err(err("reading the history"))?;
    let mut stmts = Statements::new(conn);
    let mut plans: HashMap<usize, Plan> = HashMap::new();
    let mut in_force: Option<usize> = None;
    let mut n = 0u64;
    while let Some(row) = rows.next().map_err(err("reading the history"))? {
        let (lsn, ordinal): (i64, i64) = (
            row.get(0).map_err(err("reading the history"))?,
            row.get(1).map_err(err("reading the history"))?,
        );
        let xid: i64 = row.get(2).map_err(err("reading the history"))?;
        let op: String = row.get(3).map_err(err("reading the history"))?;
        let before: Option<String> = row.get(4).map_err(err("reading the history"))?;
        let after: Option<String> = row.get(5).map_err(err("reading the history"))?;
        let partition: Option<String> = row.get(6).map_err(err("reading the history"))?;
        if op == "truncate" && partition.is_some() {
            // Some partitions emptied: not replayable onto the root's rows. It marked the table
            // waiting for a re-copy at its own position, after this copy's: the next one settles it.
            continue;
        }
        // The definition in force for this change: the last one effective at or before it.
        let index = definitions.iter().rposition(|d| d.from <= (lsn, ordinal));
        let relation = index.map_or(rel, |i| &definitions[i].relation);
        let key = index.map_or(usize::MAX, |i| i);
        if in_force != Some(key) {
            stmts.forget(relation.relid);
            in_force = Some(key);
        }
        let plan = match plans.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(plan_for(conn, path, relation)?)
            }
        };
        let plan = &*plan;
        let bad = |reason: String| SinkError::BadHistory {
            table: name.clone(),
            commit_lsn: Lsn(lsn as u64),
            ordinal: ordinal as u32,
            reason,
        };
        let op = match op.as_str() {
            "insert" => Op::Insert,
            "update" => Op::Update,
            "delete" => Op::Delete,
            "truncate" => Op::Truncate,
            other => return Err(bad(format!("unknown op {other:?}"))),
        };
        let (after, gaps) = match after {
            Some(text) => {
                let (values, gaps) = row_values(relation, &text).map_err(&bad)?;
                (Some(values), gaps)
            }
            None => (None, Vec::new()),
        };
        let before = match before {
            Some(text) => Some(old_values(relation, &plan.keys, &text).map_err(&bad)?),
            None => None,
        };
        let change = Change {
            op,
            relid: relation.relid,
            schema: relation.schema.clone(),
            table: relation.table.clone(),
            after,
            before,
            commit_lsn: Lsn(lsn as u64),
            ordinal: ordinal as u32,
            xid: xid as u32,
            commit_time: 0,
            partition,
        };
        apply(&mut stmts, path, plan, &change, &gaps)?;
        n += 1;
    }
    Ok(n)
}

/// The table's definitions recorded in `_fig_schema`, in the order they took effect.
fn definitions(conn: &Connection, schema: &str, table: &str) -> rusqlite::Result<Vec<Definition>> {
    let mut stmt = conn.prepare(
        "SELECT effective_lsn, effective_ordinal, relid, columns FROM _fig_schema \
         WHERE schema = ?1 AND \"table\" = ?2 ORDER BY effective_lsn, effective_ordinal",
    )?;
    let rows = stmt.query_map([schema, table], |r| {
        Ok((
            (r.get::<_, i64>(0)?, r.get::<_, i64>(1)?),
            r.get::<_, u32>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (from, relid, columns) = row?;
        if let Some(relation) = mirror::recorded(relid, schema, table, &columns) {
            out.push(Definition {
                from,
                relation: Arc::new(relation),
            });
        }
    }
    Ok(out)
}

/// A plan for applying changes of `rel` to its mirror, with any column the mirror lacks added
/// (without recording a definition: the replayed ones are in `_fig_schema` already).
fn plan_for(conn: &Connection, path: &Path, rel: &Arc<Relation>) -> Result<Plan, SinkError> {
    let mirror = mirror::mirror_name(&rel.schema, &rel.table);
    let err = |e| sql_err(path, format!("preparing the replay into \"{mirror}\""), e);
    let existing = mirror::mirror_columns(conn, &mirror).map_err(err)?;
    for c in &rel.columns {
        if !existing.iter().any(|e| e.eq_ignore_ascii_case(&c.name)) {
            conn.execute_batch(&format!(
                "ALTER TABLE {} ADD COLUMN {}",
                quote(&mirror),
                mirror::column_def(c)
            ))
            .map_err(err)?;
        }
    }
    let rowid = mirror::addressable(conn, &mirror, rel).map_err(err)?;
    Ok(Plan::new(Arc::clone(rel), &rowid))
}

/// A history row's `after`: one value per column of `rel`, and the positions of columns it lacks
/// (unchanged TOAST the stream could not fill; placeholders in the values).
fn row_values(rel: &Relation, text: &str) -> Result<(Vec<Value>, Vec<usize>), String> {
    let mut object = parse_object(text)?;
    let mut values = Vec::with_capacity(rel.columns.len());
    let mut gaps = Vec::new();
    for (i, c) in rel.columns.iter().enumerate() {
        match object.remove(&c.name) {
            Some(j) => values.push(values::from_history(c, j)),
            None => {
                gaps.push(i);
                values.push(Value::Null);
            }
        }
    }
    // A column the definition does not know: the row was written under a definition the sink never
    // recorded; replaying it under another would drop that value.
    if let Some(extra) = object.keys().next() {
        return Err(format!("its column {extra:?} is in no recorded definition"));
    }
    Ok((values, gaps))
}

/// A history row's `before`: the whole old row when it has every column, else the key columns
/// (`keys`, positions in relation order), as the stream sent them.
fn old_values(rel: &Relation, keys: &[usize], text: &str) -> Result<Vec<Value>, String> {
    let mut object = parse_object(text)?;
    let full = rel.columns.iter().all(|c| object.contains_key(&c.name));
    let positions: Vec<usize> = match full {
        true => (0..rel.columns.len()).collect(),
        false => keys.to_vec(),
    };
    positions
        .iter()
        .map(|&p| {
            let c = &rel.columns[p];
            object
                .remove(&c.name)
                .map(|j| values::from_history(c, j))
                .ok_or_else(|| format!("the old row lacks the key column {:?}", c.name))
        })
        .collect()
}

fn parse_object(text: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err("not a JSON object".into()),
        Err(e) => Err(format!("unreadable JSON: {e}")),
    }
}
