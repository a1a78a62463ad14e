//! Incremental syncs: the rows whose cursor column (an `updated_at` timestamp, a growing sequence)
//! is past the stored cursor, in pages ordered by (cursor, primary key).
//!
//! ```text
//! stored cursor (c0, k0)            look-back window                     new rows
//! ──────────────────────────[c0 − lookback ······· (c0,k0)]──────────────────────────▶ cursor order
//!                            phase 1: read again, cursor     phase 2: pages by (c, k) > last,
//!                            stays (c0, k0)                  cursor = the page's last row
//! ```
//!
//! - **Ties.** Many rows can share a timestamp; pages continue strictly after the last (cursor, key)
//!   stored, so a page boundary inside a run of equal timestamps loses no row.
//! - **Late commits.** A transaction that commits after a pass has read past its rows' timestamps
//!   (it took `now()` when it started) is invisible to that pass; the next pass reads the look-back
//!   window again and stores such rows by key (idempotent for rows it has).
//! - **Atomic with the cursor.** Each page's rows and its cursor are stored in one sink transaction,
//!   so after a crash the cursor never claims rows the sink does not have.
//! - Not seen: deletes (a row that is gone has no cursor), and rows whose cursor is NULL. Use CDC
//!   or snapshot mode for tables where those matter.

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::catalog::{self, KeyRule, TableInfo};
use super::copy;
use super::snapshot::begin_read;
use super::writer::{Feed, RowPool, SinkHandle, CHANNEL_BATCHES};
use super::SyncError;
use crate::config::{parse_duration, Config, TableSync};
use crate::ident::quote;
use crate::model::Value;
use crate::sink::{Cursor, Load, LoadMode, RowsAtHand};

/// Rows per page (one sink transaction each).
const PAGE_ROWS: usize = 20_000;

/// What a cursor column's type allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CursorKind {
    /// date, timestamp, timestamptz: the look-back is a duration.
    Time,
    /// smallint, integer, bigint, numeric: the look-back is a number.
    Number,
}

fn cursor_kind(type_oid: u32) -> Option<CursorKind> {
    match type_oid {
        1082 | 1114 | 1184 => Some(CursorKind::Time),
        20 | 21 | 23 | 1700 => Some(CursorKind::Number),
        _ => None,
    }
}

/// One pass over `t`; returns the rows stored.
pub async fn sync_table(
    config: &Config,
    t: &TableSync,
    cursor_column: &str,
    lookback: Option<&str>,
    sink: &SinkHandle,
) -> Result<u64, SyncError> {
    let name = t.name();
    let bad = |problem: String| SyncError::Cursor {
        table: name.clone(),
        problem,
    };
    let client = config.source.connect_sql().await?;
    let version = catalog::server_version(&client).await?;
    let types = catalog::load_types(&client).await?;
    let info = catalog::describe(
        &client,
        &t.schema,
        &t.table,
        KeyRule::PrimaryKey,
        &types,
        version,
        config.include_generated,
    )
    .await?;
    let rel = &info.relation;
    if info.primary_key.is_empty() {
        return Err(bad("the table has no primary key; the cursor needs one to order rows that share a cursor value (use snapshot mode instead)".into()));
    }
    let pos = rel
        .columns
        .iter()
        .position(|c| c.name == cursor_column)
        .ok_or_else(|| {
            bad(format!(
                "the cursor column {cursor_column:?} does not exist (columns: {})",
                rel.columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let column = &rel.columns[pos];
    let kind = cursor_kind(column.type_oid).ok_or_else(|| {
        bad(format!(
            "the cursor column {cursor_column:?} is of type {}, which cannot order changes; use a timestamp, date or integer column",
            column.type_name
        ))
    })?;
    let lookback = match (lookback, kind) {
        (None, _) => None,
        (Some(l), CursorKind::Time) => {
            let d = parse_duration(l).map_err(|p| bad(format!("lookback: {p}")))?;
            Some(format!("interval '{} seconds'", d.as_secs()))
        }
        (Some(l), CursorKind::Number) => {
            let n: i64 = l.trim().parse().map_err(|_| {
                bad(format!(
                    "lookback {l:?} must be a whole number for a numeric cursor"
                ))
            })?;
            Some(n.to_string())
        }
    };
    if !catalog::leads_an_index(&client, rel.relid, column.attnum.unwrap_or(0)).await? {
        warn!(table = %name, cursor = cursor_column, "no index starts with the cursor column: every incremental pass scans the whole table; create one (CREATE INDEX ON {name} ({cursor_column}))");
    }

    let stored = {
        let (schema, table) = (t.schema.clone(), t.table.clone());
        sink.with(move |s| s.cursor(&schema, &table)).await?
    };
    let stored = match stored {
        Some(c) if c.column != cursor_column => {
            warn!(table = %name, was = %c.column, now = cursor_column, "the cursor column changed: reading the table from the start");
            None
        }
        other => other,
    };
    let q = Query::new(&info, pos, &t.schema, &t.table)?;
    begin_read(&client, config.sync_lock_timeout).await?;
    let position = super::snapshot::wal_position(&client).await?;
    let load = Load {
        relation: info.relation.clone(),
        mode: LoadMode::Upsert,
        position,
        snapshot: String::new(),
        sync: "incremental",
        chunk_blocks: 0,
        partitions: None,
    };
    sink.with({
        let load = load.clone();
        move |s| s.load_begin(&load).map(drop)
    })
    .await?;

    let mut total = 0u64;
    // Phase 1: the look-back window, up to the stored cursor (which stays).
    if let (Some(c), Some(lb)) = (&stored, &lookback) {
        let from = format!(
            "{} >= {} - {lb}",
            quote(cursor_column),
            q.literal(pos, &c.value)?
        );
        let upto = format!("{} <= {}", q.tuple(), q.values(&c.value, &c.key)?);
        total += pages(
            &client,
            &info,
            &q,
            &load,
            sink,
            Some(format!("{from} AND {upto}")),
            Some(c.clone()),
        )
        .await?;
    }
    // Phase 2: past the stored cursor; the cursor follows each page.
    let after = match &stored {
        Some(c) => Some(format!("{} > {}", q.tuple(), q.values(&c.value, &c.key)?)),
        None => None,
    };
    total += pages(&client, &info, &q, &load, sink, after, None).await?;
    let _ = client.batch_execute("COMMIT").await;
    // The pass is whole: sinks that mark loads (JSON Lines' load_end) say so.
    sink.with(move |s| s.load_finish(&load).map(drop)).await?;
    info!(table = %name, rows = total, "incremental sync done");
    Ok(total)
}

/// Reads pages from `lower` on; each page is stored with `fixed` as its cursor, or (None) with its
/// last row's.
async fn pages(
    client: &tokio_postgres::Client,
    info: &TableInfo,
    q: &Query<'_>,
    load: &Load,
    sink: &SinkHandle,
    lower: Option<String>,
    fixed: Option<Cursor>,
) -> Result<u64, SyncError> {
    let mut condition = lower;
    let mut total = 0u64;
    loop {
        let mut cond = format!("{} IS NOT NULL", quote(q.cursor_name()));
        if let Some(c) = &condition {
            cond.push_str(" AND ");
            cond.push_str(c);
        }
        let sql = copy::copy_sql(
            info,
            &cond,
            &format!("ORDER BY {} LIMIT {PAGE_ROWS}", q.order()),
        );
        let rows = read_all(client, info, &sql).await?;
        let Some(last) = rows.last() else {
            return Ok(total);
        };
        let key: Vec<Value> = info.primary_key.iter().map(|&k| last[k].clone()).collect();
        let cursor = fixed.clone().unwrap_or_else(|| Cursor {
            column: q.cursor_name().to_string(),
            value: last[q.cursor].clone(),
            key: key.clone(),
        });
        condition = Some(format!(
            "{} > {}{}",
            q.tuple(),
            q.values(&last[q.cursor], &key)?,
            fixed
                .as_ref()
                .map(|c| -> Result<String, SyncError> {
                    Ok(format!(
                        " AND {} <= {}",
                        q.tuple(),
                        q.values(&c.value, &c.key)?
                    ))
                })
                .transpose()?
                .unwrap_or_default()
        ));
        let n = rows.len();
        let load = load.clone();
        total += sink
            .with(move |s| {
                let mut page = RowsAtHand::new(rows.into_iter().map(Ok));
                s.load_chunk(&load, 0, &mut page, Some(&cursor))
            })
            .await?;
        if n < PAGE_ROWS {
            return Ok(total);
        }
    }
}

/// Runs a COPY and collects its rows (a page: bounded by `PAGE_ROWS`).
async fn read_all(
    client: &tokio_postgres::Client,
    info: &TableInfo,
    sql: &str,
) -> Result<Vec<Vec<Value>>, SyncError> {
    let (tx, mut rx) = mpsc::channel(CHANNEL_BATCHES);
    let collect = async {
        let mut rows = Vec::new();
        while let Some(feed) = rx.recv().await {
            match feed {
                Feed::Rows(mut b) => rows.append(&mut b),
                Feed::End | Feed::Failed(_) => break,
            }
        }
        rows
    };
    let read = async {
        // The rows are kept (a page), so there is nothing to reuse: a pool of its own.
        let r = copy::copy_rows(client, info, sql, &tx, &RowPool::default(), None).await;
        drop(tx);
        r
    };
    let (rows, read) = tokio::join!(collect, read);
    read?;
    Ok(rows)
}

/// The pieces of the cursor queries of one table.
struct Query<'a> {
    info: &'a TableInfo,
    /// Position of the cursor column.
    cursor: usize,
    table: String,
}

impl<'a> Query<'a> {
    fn new(
        info: &'a TableInfo,
        cursor: usize,
        schema: &str,
        table: &str,
    ) -> Result<Self, SyncError> {
        Ok(Query {
            info,
            cursor,
            table: format!("{schema}.{table}"),
        })
    }

    fn cursor_name(&self) -> &str {
        &self.info.relation.columns[self.cursor].name
    }

    /// `(cursor, key…)`: the order of a pass.
    fn positions(&self) -> Vec<usize> {
        std::iter::once(self.cursor)
            .chain(self.info.primary_key.iter().copied())
            .collect()
    }

    fn tuple(&self) -> String {
        let cols = self.info.relation.columns.as_slice();
        format!(
            "({})",
            self.positions()
                .iter()
                .map(|&p| quote(&cols[p].name))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    fn order(&self) -> String {
        let cols = self.info.relation.columns.as_slice();
        self.positions()
            .iter()
            .map(|&p| quote(&cols[p].name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `(cursor literal, key literals…)`.
    fn values(&self, cursor: &Value, key: &[Value]) -> Result<String, SyncError> {
        let mut out = vec![self.literal(self.cursor, cursor)?];
        for (&p, v) in self.info.primary_key.iter().zip(key) {
            out.push(self.literal(p, v)?);
        }
        Ok(format!("({})", out.join(", ")))
    }

    /// `value` as an SQL literal of column `pos`'s type.
    fn literal(&self, pos: usize, value: &Value) -> Result<String, SyncError> {
        let ty = &self.info.relation.columns[pos].type_name;
        let text = |s: &str| format!("'{}'::{ty}", s.replace('\'', "''"));
        Ok(match value {
            Value::Int(i) => format!("{i}::{ty}"),
            Value::Bool(b) => b.to_string(),
            Value::Numeric(s)
            | Value::Text(s)
            | Value::Date(s)
            | Value::Time(s)
            | Value::Timestamp(s)
            | Value::Timestamptz(s)
            | Value::Uuid(s)
            | Value::Enum(s)
            | Value::Other(s) => text(s),
            Value::Float(f) => text(&f.to_string()),
            Value::Bytes(b) => {
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                text(&format!("\\x{hex}"))
            }
            Value::Null | Value::Json(_) | Value::Array(_) | Value::BoundedArray(_) => {
                return Err(SyncError::Cursor {
                    table: self.table.clone(),
                    problem: format!(
                        "a {} value cannot continue a cursor (column {})",
                        ty, self.info.relation.columns[pos].name
                    ),
                })
            }
        })
    }
}
