//! Mirror tables: one SQLite table per source table, named `schema.table` (one quoted identifier that
//! contains the dot), holding the current state under the source column names.
//!
//! - **Keyed** relations (some, not all, columns are key columns): a unique index `"schema.table:key"`
//!   on the key columns (`"_fig_load_<id>:key"` when a snapshot load built it: SQLite cannot rename
//!   an index, and filling it during the load is cheaper than building it after); insert and update upsert, delete removes by key, an update that changes the
//!   key removes the old key first.
//! - **Multiset** relations (no key columns, or every column a key column, which is how pgoutput
//!   reports `REPLICA IDENTITY FULL`): rows are kept as a multiset, exactly as many copies as the
//!   source has; insert appends, update and delete remove one row equal in every column to the old row
//!   (which `REPLICA IDENTITY FULL` provides; without it the change is refused with
//!   [`SinkError::NoKey`]). A plain index on the first column keeps the match from scanning the table.
//!   The one row is addressed by SQLite's row id; a mirror whose columns take every name of it
//!   (`rowid`, `_rowid_`, `oid`, any case) gets a column `_fig_rowid INTEGER PRIMARY KEY` (an
//!   alias of the row id) at creation, or is rebuilt with one when an older file's mirror or an
//!   added column hides the last name (see [`addressable`]).
//!
//! Schema changes: a new column is added (`ALTER TABLE … ADD COLUMN`, NULL in existing rows); a
//! dropped column stays in the mirror (NULL from then on in new rows, its old values kept); a renamed
//! column shows as a new column; a renamed table renames its mirror; a key change rebuilds the index.
//! Columns are declared with a type that keeps stored values as they are (see `values.rs`). Every definition is recorded in
//! `_fig_schema` with the position (commit LSN, ordinal) of the first change that used it.
//!
//! All statements are built here once per relation definition and run through rusqlite's statement
//! cache; identifiers are always quoted (`"` doubled), so any source name works, `a"b` and `x;DROP`
//! included.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension};

use super::{lsn_i64, sql_err};
use crate::drift::{SchemaChange, Source};
use crate::model::{Lsn, Relation};
use crate::sink::{json, key_positions, SinkError};

pub(crate) use crate::ident::quote;

/// The (unquoted) mirror table name of a source table: `schema.table`, with the exact names. SQLite
/// reserves names that begin with `sqlite_` (in any case) for itself; such a mirror is named with
/// an `_` in front (`_sqlite_x.t` for `sqlite_x.t`).
pub fn mirror_name(schema: &str, table: &str) -> String {
    let reserved = schema
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("sqlite_"));
    match reserved {
        true => format!("_{schema}.{table}"),
        false => format!("{schema}.{table}"),
    }
}

fn index_name(mirror: &str) -> String {
    format!("{mirror}:key")
}

/// Rows per grouped mirror insert: one statement start, cursor and reset for many rows, as for the
/// history (`history.rs`); SQLite applies a multi-row upsert row by row, in order, so a key repeated
/// inside a group ends as the last row that has it, as separate statements would.
const GROUP_ROWS: usize = 32;
/// Parameters per grouped insert, at most (SQLite's limit is 32,766): wide tables get fewer rows.
const MAX_GROUP_PARAMS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Keying {
    /// Positions of the key columns, in relation order.
    Key(Vec<usize>),
    Multiset,
}

/// Everything needed to apply changes of one relation definition to its mirror.
#[derive(Debug)]
pub(crate) struct Plan {
    pub rel: Arc<Relation>,
    pub keying: Keying,
    /// Positions of the columns the relation marks as key columns (what a key-only `before` holds).
    pub keys: Vec<usize>,
    pub n_keys: usize,
    /// Keyed: upsert; multiset: plain insert. Parameters: every column in relation order.
    pub insert: String,
    /// `insert` for [`Plan::group_rows`] rows at once (parameters: row after row).
    pub insert_group: String,
    pub group_rows: usize,
    /// Keyed: delete by key (parameters: key columns); multiset: delete one row equal to all columns.
    pub delete: String,
    /// The relation's columns of the row matched like `delete` (at most one).
    pub select: String,
    pub truncate: String,
    /// The JSON object keys of the history's `before` and `after`, spelled once.
    pub json: json::Keys,
}

impl Plan {
    /// `rowid` names SQLite's row id in this mirror (see [`rowid_alias`]).
    pub(crate) fn new(rel: Arc<Relation>, rowid: &str) -> Plan {
        let mirror = quote(&mirror_name(&rel.schema, &rel.table));
        let keys = key_positions(&rel);
        let n_keys = keys.len();
        let keying = if keys.is_empty() || keys.len() == rel.columns.len() {
            Keying::Multiset
        } else {
            Keying::Key(keys.clone())
        };
        let cols: Vec<String> = rel.columns.iter().map(|c| quote(&c.name)).collect();
        let col_list = cols.join(",");
        let params = (1..=cols.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let matching = |positions: &mut dyn Iterator<Item = usize>| {
            positions
                .enumerate()
                .map(|(i, p)| format!("{} IS ?{}", cols[p], i + 1))
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        let group_rows = (MAX_GROUP_PARAMS / cols.len().max(1)).clamp(1, GROUP_ROWS);
        let one_row = format!("({})", vec!["?"; cols.len()].join(","));
        let group_values = vec![one_row.as_str(); group_rows].join(",");
        let (insert, insert_group, delete, select) = match &keying {
            Keying::Key(keys) => {
                let key_list = keys
                    .iter()
                    .map(|&k| cols[k].as_str())
                    .collect::<Vec<_>>()
                    .join(",");
                let sets = (0..cols.len())
                    .filter(|p| !keys.contains(p))
                    .map(|p| format!("{0}=excluded.{0}", cols[p]))
                    .collect::<Vec<_>>()
                    .join(",");
                let by_key = matching(&mut keys.iter().copied());
                (
                    format!("INSERT INTO {mirror} ({col_list}) VALUES ({params}) ON CONFLICT ({key_list}) DO UPDATE SET {sets}"),
                    format!("INSERT INTO {mirror} ({col_list}) VALUES {group_values} ON CONFLICT ({key_list}) DO UPDATE SET {sets}"),
                    format!("DELETE FROM {mirror} WHERE {by_key}"),
                    format!("SELECT {col_list} FROM {mirror} WHERE {by_key}"),
                )
            }
            Keying::Multiset => {
                let by_row = matching(&mut (0..cols.len()));
                (
                    format!("INSERT INTO {mirror} ({col_list}) VALUES ({params})"),
                    format!("INSERT INTO {mirror} ({col_list}) VALUES {group_values}"),
                    format!("DELETE FROM {mirror} WHERE {rowid} = (SELECT {rowid} FROM {mirror} WHERE {by_row} LIMIT 1)"),
                    format!("SELECT {col_list} FROM {mirror} WHERE {by_row} LIMIT 1"),
                )
            }
        };
        Plan {
            truncate: format!("DELETE FROM {mirror}"),
            json: json::Keys::new(&rel.columns),
            rel,
            keying,
            keys,
            n_keys,
            insert,
            insert_group,
            group_rows,
            delete,
            select,
        }
    }

    /// The `CREATE INDEX` statement this definition wants for an index called `name`, as SQLite
    /// stores it in `sqlite_master.sql`.
    fn index_sql(&self, mirror: &str, name: &str) -> Option<String> {
        let cols = &self.rel.columns;
        match &self.keying {
            Keying::Key(keys) => Some(format!(
                "CREATE UNIQUE INDEX {} ON {} ({})",
                quote(name),
                quote(mirror),
                keys.iter()
                    .map(|&k| quote(&cols[k].name))
                    .collect::<Vec<_>>()
                    .join(",")
            )),
            Keying::Multiset => cols.first().map(|c| {
                format!(
                    "CREATE INDEX {} ON {} ({})",
                    quote(name),
                    quote(mirror),
                    quote(&c.name)
                )
            }),
        }
    }
}

/// A mirror column's definition: its name and a declared type that tells readers (BI tools) what
/// it holds without ever converting what is stored (see `values.rs`, [`super::values::declared_type`]).
pub(crate) fn column_def(c: &crate::model::Column) -> String {
    match super::values::declared_type(c) {
        Some(t) => format!("{} {t}", quote(&c.name)),
        None => quote(&c.name),
    }
}

/// [`column_def`] of every column, comma-separated.
pub(crate) fn column_defs(columns: &[crate::model::Column]) -> String {
    columns
        .iter()
        .map(column_def)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The JSON text `_fig_schema.columns` holds for a relation: `[{"name","type","oid","key","not_null"[,"attnum"]}]`
/// (`attnum` when the plugin or the catalog gave it).
pub(crate) fn columns_json(rel: &Relation) -> String {
    let mut s = String::from("[");
    for (i, c) in rel.columns.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str("{\"name\":");
        json::push_str(&mut s, &c.name);
        s.push_str(",\"type\":");
        json::push_str(&mut s, &c.type_name);
        s.push_str(&format!(
            ",\"oid\":{},\"key\":{},\"not_null\":{}",
            c.type_oid, c.key, c.not_null
        ));
        if let Some(a) = c.attnum {
            s.push_str(&format!(",\"attnum\":{a}"));
        }
        s.push('}');
    }
    s.push(']');
    s
}

/// A definition recorded by [`columns_json`], read back (for drift detection).
pub(crate) fn recorded(relid: u32, schema: &str, table: &str, columns: &str) -> Option<Relation> {
    let v: Vec<serde_json::Value> = serde_json::from_str(columns).ok()?;
    let columns = v
        .iter()
        .map(|c| {
            Some(crate::model::Column {
                name: c["name"].as_str()?.to_string(),
                type_name: c["type"].as_str()?.to_string(),
                type_oid: c["oid"].as_u64()? as u32,
                key: c["key"].as_bool()?,
                not_null: c["not_null"].as_bool()?,
                attnum: c["attnum"].as_i64().map(|a| a as i16),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Relation {
        relid,
        schema: schema.to_string(),
        table: table.to_string(),
        columns,
    })
}

/// How a relation met its mirror in [`ensure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// The sink knew this relation's definition before.
    Known,
    /// First seen, and no mirror under its name: created now, empty.
    New,
    /// First seen, but a mirror under its name exists, filled by another relation (a table
    /// dropped and created again under the same name): it holds that table's rows.
    Recreated,
}

/// What [`ensure`] did: the plan for the definition, the drift it found, how the relation arrived.
pub(crate) struct Ensured {
    pub plan: Plan,
    pub drift: Option<SchemaChange>,
    pub arrival: Arrival,
    /// The mirror was renamed after its table (and the table's state moved with it).
    pub renamed: bool,
}

/// Brings the mirror of `rel` to its definition (inside the caller's transaction) and records the
/// definition in `_fig_schema` when it differs from the last one recorded for the relation. Returns
/// the plan for its changes. `first` is where the definition first applies: the (commit LSN,
/// ordinal) of the change that first uses it, or a load's position with ordinal 0.
pub(crate) fn ensure(
    conn: &Connection,
    path: &std::path::Path,
    rel: &Arc<Relation>,
    first: (Lsn, u32),
    source: Source<'_>,
) -> Result<Ensured, SinkError> {
    let err = |what: &str| {
        let what = format!("{what} for {}.{}", rel.schema, rel.table);
        move |e| sql_err(path, what.clone(), e)
    };
    let effective_lsn = lsn_i64(first.0)?;
    let mirror = mirror_name(&rel.schema, &rel.table);
    let cols_json = columns_json(rel);

    if let Some(e) = column_collision(rel) {
        return Err(e);
    }
    // What was recorded last for this relation.
    let last: Option<(String, String, String)> = conn
        .prepare_cached("SELECT schema, \"table\", columns FROM _fig_schema WHERE relid = ?1 ORDER BY effective_lsn DESC, effective_ordinal DESC LIMIT 1")
        .and_then(|mut s| s.query_row([rel.relid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional())
        .map_err(err("reading the schema history"))?;
    if let Some(e) = name_collision(conn, rel).map_err(err("reading the schema history"))? {
        return Err(e);
    }

    let existing = mirror_columns(conn, &mirror).map_err(err("reading the mirror's columns"))?;
    let mut renamed = false;
    let existing = match (existing.is_empty(), &last) {
        (true, Some((old_schema, old_table, _)))
            if (old_schema, old_table) != (&rel.schema, &rel.table) =>
        {
            // The source table was renamed: rename its mirror, if it has one.
            let old = mirror_name(old_schema, old_table);
            if mirror_columns(conn, &old)
                .map_err(err("reading the mirror's columns"))?
                .is_empty()
            {
                existing
            } else {
                conn.execute_batch(&format!(
                    "DROP INDEX IF EXISTS {}; ALTER TABLE {} RENAME TO {}",
                    quote(&index_name(&old)),
                    quote(&old),
                    quote(&mirror)
                ))
                .map_err(err("renaming the mirror table"))?;
                // A table out of sync or waiting for a copy stays so under its new name.
                super::tables::rename(conn, (old_schema, old_table), (&rel.schema, &rel.table))
                    .map_err(err("moving the table's state to its new name"))?;
                renamed = true;
                mirror_columns(conn, &mirror).map_err(err("reading the mirror's columns"))?
            }
        }
        _ => existing,
    };

    if !existing.is_empty() {
        undeclare_changed_types(conn, &mirror, rel).map_err(err("retyping the mirror table"))?;
    }
    let arrival = match (&last, existing.is_empty()) {
        (Some(_), _) => Arrival::Known,
        (None, true) => Arrival::New,
        (None, false) => Arrival::Recreated,
    };
    if rel.columns.is_empty() {
        // SQLite tables need a column; a column-less source table has only its change history.
    } else if existing.is_empty() {
        conn.execute_batch(&format!(
            "CREATE TABLE {} ({}{})",
            quote(&mirror),
            column_defs(&rel.columns),
            rowid_def(&rel.columns)
        ))
        .map_err(err("creating the mirror table"))?;
    } else {
        for c in &rel.columns {
            // SQLite folds ASCII case in identifiers, quoted or not.
            if !existing.iter().any(|e| e.eq_ignore_ascii_case(&c.name)) {
                conn.execute_batch(&format!(
                    "ALTER TABLE {} ADD COLUMN {}",
                    quote(&mirror),
                    column_def(c)
                ))
                .map_err(err("adding a column to the mirror table"))?;
            }
        }
    }

    let rowid = match rel.columns.is_empty() {
        true => "rowid".to_string(),
        false => {
            addressable(conn, &mirror, rel).map_err(err("giving the mirror a row id column"))?
        }
    };
    let plan = Plan::new(Arc::clone(rel), &rowid);
    if !rel.columns.is_empty() {
        // The key index, under the mirror's name or, when a load's staging table became the
        // mirror, under the staging table's (SQLite cannot rename an index; see `load.rs`).
        let have: Option<(String, String)> = conn
            .prepare_cached(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1 \
                 AND (name = ?2 OR name GLOB '_fig_load_*:key') ORDER BY name = ?2 DESC LIMIT 1",
            )
            .and_then(|mut s| {
                s.query_row([&mirror, &index_name(&mirror)], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
            })
            .map_err(err("reading the mirror's index"))?;
        let fits = have
            .as_ref()
            .is_some_and(|(name, sql)| plan.index_sql(&mirror, name).as_ref() == Some(sql));
        if !fits {
            if let Some((name, _)) = &have {
                conn.execute_batch(&format!("DROP INDEX {}", quote(name)))
                    .map_err(err("dropping the mirror's old key index"))?;
            }
            if let Some(sql) = plan.index_sql(&mirror, &index_name(&mirror)) {
                conn.execute_batch(&sql).map_err(|e| {
                    sql_err(
                        path,
                        format!(
                            "building the key index of {}.{} (the mirror holds rows that repeat the new key: re-snapshot the table)",
                            rel.schema, rel.table
                        ),
                        e,
                    )
                })?;
            }
        }
    }

    let changed = match &last {
        Some((schema, table, columns)) => {
            (schema, table, columns) != (&rel.schema, &rel.table, &cols_json)
        }
        None => true,
    };
    // Drift against the last recorded definition, recorded in the history with it.
    let drift = match (&last, changed) {
        (Some((schema, table, columns)), true) => recorded(rel.relid, schema, table, columns)
            .map(|old| crate::drift::diff(&old, rel))
            .filter(|d| !d.is_empty())
            .map(|d| SchemaChange::new(rel, Some(first.0), source, d)),
        _ => None,
    };
    if let Some(d) = &drift {
        conn.prepare_cached(
            "INSERT INTO _fig_schema_changes (relid, effective_lsn, effective_ordinal, schema, \"table\", source, flagged, changes, ddl, detected_at, repair) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .and_then(|mut s| {
            s.execute(rusqlite::params![
                rel.relid,
                effective_lsn,
                first.1,
                rel.schema,
                rel.table,
                d.source,
                d.flagged,
                serde_json::to_string(&d.changes).unwrap_or_default(),
                d.ddl,
                d.detected_at,
                d.repair,
            ])
        })
        .map_err(err("recording the schema change"))?;
    }
    if changed {
        conn.prepare_cached(
            "INSERT INTO _fig_schema (relid, effective_lsn, effective_ordinal, schema, \"table\", mirror, columns) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (relid, effective_lsn, effective_ordinal) DO UPDATE SET \
             schema = excluded.schema, \"table\" = excluded.\"table\", mirror = excluded.mirror, columns = excluded.columns",
        )
        .and_then(|mut s| {
            s.execute(rusqlite::params![
                rel.relid,
                effective_lsn,
                first.1,
                rel.schema,
                rel.table,
                mirror,
                cols_json
            ])
        })
        .map_err(err("recording the relation definition"))?;
    }
    Ok(Ensured {
        plan,
        drift,
        arrival,
        renamed,
    })
}

/// Two columns of `rel` whose names differ only in ASCII case, which no SQLite table can hold.
pub(crate) fn column_collision(rel: &Relation) -> Option<SinkError> {
    rel.columns.iter().enumerate().find_map(|(i, a)| {
        rel.columns[..i]
            .iter()
            .find(|b| b.name.eq_ignore_ascii_case(&a.name))
            .map(|b| SinkError::ColumnNameCollision {
                table: crate::ident::spelled_qualified(&rel.schema, &rel.table),
                first: crate::ident::spelled(&b.name),
                second: crate::ident::spelled(&a.name),
            })
    })
}

/// Two source tables under one mirror name: `rel` and `other` (schema, table).
pub(crate) fn collision(rel: &Relation, other: (&str, &str)) -> SinkError {
    SinkError::MirrorNameCollision {
        mirror: mirror_name(&rel.schema, &rel.table),
        first: crate::ident::spelled_qualified(other.0, other.1),
        second: crate::ident::spelled_qualified(&rel.schema, &rel.table),
    }
}

/// Whether `a` and `b` (schema, table) would share a mirror (its name, after escaping, compared
/// without ASCII case as SQLite compares names) while being two tables.
pub(crate) fn collide(a: (&str, &str), b: (&str, &str)) -> bool {
    a != b && mirror_name(a.0, a.1).eq_ignore_ascii_case(&mirror_name(b.0, b.1))
}

/// The collision of `rel`'s mirror name with another relation whose latest recorded definition
/// (`_fig_schema`) claims that name under another source name. The same name under a new relid is
/// no collision: the table was dropped and created again, and its mirror is reused.
pub(crate) fn name_collision(
    conn: &Connection,
    rel: &Relation,
) -> rusqlite::Result<Option<SinkError>> {
    let mirror = mirror_name(&rel.schema, &rel.table);
    let mut stmt = conn.prepare_cached(
        "SELECT s.schema, s.\"table\" FROM _fig_schema s \
         WHERE s.mirror = ?1 COLLATE NOCASE AND s.relid <> ?2 AND NOT EXISTS ( \
             SELECT 1 FROM _fig_schema n WHERE n.relid = s.relid \
             AND (n.effective_lsn, n.effective_ordinal) > (s.effective_lsn, s.effective_ordinal))",
    )?;
    let claimants = stmt
        .query_map(rusqlite::params![mirror, rel.relid], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(claimants
        .iter()
        .find(|(s, t)| collide((s, t), (&rel.schema, &rel.table)))
        .map(|(s, t)| collision(rel, (s, t))))
}

/// A column whose declared type no longer fits the source's (a type changed, or a column dropped
/// and added again under its name with another type) would have SQLite convert the new values by
/// the old affinity (`'10'` for the integer 10 in a `DECIMAL_TEXT` column). SQLite cannot change a
/// declared type, so the mirror is rebuilt with such columns declared without a type: old values
/// are copied as they are (never cast), new ones stored as bound. The re-copy that a type change
/// brings declares the new type.
fn undeclare_changed_types(
    conn: &Connection,
    mirror: &str,
    rel: &Relation,
) -> rusqlite::Result<()> {
    let mut stmt =
        conn.prepare_cached("SELECT name, type, pk FROM pragma_table_info(?1) ORDER BY cid")?;
    let columns: Vec<(String, String, i64)> = stmt
        .query_map([mirror], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let misfit = |name: &str, declared: &str| {
        !declared.is_empty()
            && rel.columns.iter().any(|c| {
                c.name.eq_ignore_ascii_case(name)
                    && super::values::declared_type(c)
                        .is_none_or(|t| !t.eq_ignore_ascii_case(declared))
            })
    };
    if !columns.iter().any(|(n, t, pk)| *pk == 0 && misfit(n, t)) {
        return Ok(());
    }
    let defs = columns
        .iter()
        .map(|(n, t, pk)| match (*pk > 0, misfit(n, t) || t.is_empty()) {
            // The row id column (`rowid_def`) stays the row id.
            (true, _) => format!("{} INTEGER PRIMARY KEY", quote(n)),
            (false, true) => quote(n),
            (false, false) => format!("{} {t}", quote(n)),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let rebuilt = format!("{mirror}:retyped");
    conn.execute_batch(&format!(
        "CREATE TABLE {new} ({defs}); INSERT INTO {new} SELECT * FROM {old}; DROP TABLE {old}; \
         ALTER TABLE {new} RENAME TO {old};",
        new = quote(&rebuilt),
        old = quote(mirror)
    ))
}

/// SQLite's names of a table's row id; a column of one of these names hides it under that name.
const ROWID_NAMES: [&str; 3] = ["rowid", "_rowid_", "oid"];

/// The name of the column a mirror whose columns hide every name of SQLite's row id gets as its
/// row id (an `INTEGER PRIMARY KEY` column is an alias of the row id): `_fig_rowid`, or with a
/// number after it when a source column has that name.
fn rowid_column(taken: &dyn Fn(&str) -> bool) -> String {
    std::iter::once("_fig_rowid".to_string())
        .chain((1..).map(|i| format!("_fig_rowid_{i}")))
        .find(|n| !taken(n))
        .expect("some name is free")
}

/// The mirror's `INTEGER PRIMARY KEY` column (only the sink declares one: its row id alias).
pub(crate) fn rowid_column_of(conn: &Connection, table: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT name FROM pragma_table_info(?1) WHERE pk > 0")?
        .query_row([table], |r| r.get(0))
        .optional()
}

/// The definition to append to a new mirror's (or staging table's) columns for `columns`: the row
/// id column when they hide every name of SQLite's row id (then no name reaches it, and a
/// multiset's update or delete could not address one row), else nothing.
pub(crate) fn rowid_def(columns: &[crate::model::Column]) -> String {
    let taken = |n: &str| columns.iter().any(|c| c.name.eq_ignore_ascii_case(n));
    match ROWID_NAMES.iter().all(|n| taken(n)) {
        true => format!(", {} INTEGER PRIMARY KEY", quote(&rowid_column(&taken))),
        false => String::new(),
    }
}

/// A name of the row id of `table` (a mirror or staging table) as it is, or `None` when its columns
/// hide every one.
pub(crate) fn rowid_alias(
    conn: &Connection,
    table: &str,
    rel: &Relation,
) -> rusqlite::Result<Option<String>> {
    if let Some(alias) = rowid_column_of(conn, table)? {
        return Ok(Some(alias));
    }
    let existing = mirror_columns(conn, table)?;
    let taken = |n: &str| {
        existing.iter().any(|e| e.eq_ignore_ascii_case(n))
            || rel.columns.iter().any(|c| c.name.eq_ignore_ascii_case(n))
    };
    Ok(ROWID_NAMES
        .into_iter()
        .find(|n| !taken(n))
        .map(str::to_string))
}

/// A name of the row id of mirror `mirror` of `rel`: when its columns hide every one (a mirror made
/// before the sink gave such mirrors a row id column, or a column added since), the mirror is
/// rebuilt with the row id column [`rowid_def`] declares, its rows copied as they are.
pub(crate) fn addressable(
    conn: &Connection,
    mirror: &str,
    rel: &Relation,
) -> rusqlite::Result<String> {
    if let Some(alias) = rowid_alias(conn, mirror, rel)? {
        return Ok(alias);
    }
    let mut stmt =
        conn.prepare_cached("SELECT name, type FROM pragma_table_info(?1) ORDER BY cid")?;
    let columns: Vec<(String, String)> = stmt
        .query_map([mirror], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let taken = |n: &str| {
        columns.iter().any(|(c, _)| c.eq_ignore_ascii_case(n))
            || rel.columns.iter().any(|c| c.name.eq_ignore_ascii_case(n))
    };
    let alias = rowid_column(&taken);
    let names = columns
        .iter()
        .map(|(n, _)| quote(n))
        .collect::<Vec<_>>()
        .join(", ");
    let defs = columns
        .iter()
        .map(|(n, t)| match t.is_empty() {
            true => quote(n),
            false => format!("{} {t}", quote(n)),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let rebuilt = format!("{mirror}:rowid");
    conn.execute_batch(&format!(
        "CREATE TABLE {new} ({defs}, {alias} INTEGER PRIMARY KEY); \
         INSERT INTO {new} ({names}) SELECT {names} FROM {old}; DROP TABLE {old}; \
         ALTER TABLE {new} RENAME TO {old};",
        new = quote(&rebuilt),
        old = quote(mirror),
        alias = quote(&alias),
    ))?;
    Ok(alias)
}

/// Column names of the mirror table `mirror`, empty when it does not exist.
pub(crate) fn mirror_columns(conn: &Connection, mirror: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT name FROM pragma_table_info(?1)")?;
    let names = stmt
        .query_map([mirror], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(names)
}
