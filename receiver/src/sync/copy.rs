//! One COPY: `COPY (SELECT … FROM "schema"."table" [WHERE …]) TO STDOUT (FORMAT …)`, decoded
//! into rows and fed to the sink in batches as it arrives.

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::Client;

use super::catalog::TableInfo;
use super::copy_binary::{select_expr, CopyDecoder, CopyError, FORMAT};
use super::progress::Progress;
use super::writer::{Feed, RowPool};
use super::SyncError;
use crate::ident::quote;

/// Rows per batch handed to the sink.
const BATCH_ROWS: usize = 2_000;

/// The `COPY … TO STDOUT` statement for `info`'s columns, with `condition` (a `WHERE`
/// clause body, may be empty) and `tail` (`ORDER BY … LIMIT …`, may be empty).
pub fn copy_sql(info: &TableInfo, condition: &str, tail: &str) -> String {
    let rel = &info.relation;
    let cols = rel
        .columns
        .iter()
        .zip(&info.types)
        .map(|(c, t)| select_expr(t, &quote(&c.name)))
        .collect::<Vec<_>>()
        .join(", ");
    let from = format!("{}.{}", quote(&rel.schema), quote(&rel.table));
    let cols = if cols.is_empty() {
        "NULL".to_string()
    } else {
        cols
    };
    let mut sql = format!("COPY (SELECT {cols} FROM {from}");
    let only = info.only_partitions.as_ref().map(|leaves| {
        let oids: Vec<String> = leaves.iter().map(u32::to_string).collect();
        format!(
            "tableoid = ANY ('{{{}}}'::pg_catalog.oid[])",
            oids.join(",")
        )
    });
    let conditions: Vec<String> = [condition, only.as_deref().unwrap_or("")]
        .into_iter()
        .filter(|c| !c.is_empty())
        .map(|c| format!("({c})"))
        .collect();
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    if !tail.is_empty() {
        sql.push(' ');
        sql.push_str(tail);
    }
    sql.push_str(&format!(") TO STDOUT (FORMAT {})", FORMAT));
    sql
}

/// Runs `sql` (from [`copy_sql`]) and sends its rows to `tx` in batches (taken from `pool`), then
/// [`Feed::End`]. On failure sends [`Feed::Failed`] so the sink stores nothing of the chunk, and
/// returns the error.
pub async fn copy_rows(
    client: &Client,
    info: &TableInfo,
    sql: &str,
    tx: &mpsc::Sender<Feed>,
    pool: &RowPool,
    progress: Option<&Progress>,
) -> Result<u64, SyncError> {
    let result = stream(client, info, sql, tx, pool, progress).await;
    match &result {
        Ok(_) => {
            let _ = tx.send(Feed::End).await;
        }
        Err(e) => {
            let _ = tx.send(Feed::Failed(e.to_string())).await;
        }
    }
    result
}

async fn stream(
    client: &Client,
    info: &TableInfo,
    sql: &str,
    tx: &mpsc::Sender<Feed>,
    pool: &RowPool,
    progress: Option<&Progress>,
) -> Result<u64, SyncError> {
    let table = format!("{}.{}", info.relation.schema, info.relation.table);
    let copy = client
        .copy_out(sql)
        .await
        .map_err(|e| SyncError::on_table(&table, &table, e))?;
    futures_util::pin_mut!(copy);
    let mut decoder = CopyDecoder::new(&info.types);
    let decode_err = |e: CopyError| SyncError::Decode {
        table: table.clone(),
        reason: e.to_string(),
    };
    // Rows are decoded into a used batch's rows where it has them (see `RowPool`); `filled`
    // counts this batch's new ones.
    let mut batch = pool.take();
    let mut filled = 0;
    let mut n = 0u64;
    while let Some(chunk) = copy.next().await {
        let chunk = chunk.map_err(|e| SyncError::on_table(&table, &table, e))?;
        decoder.push(&chunk);
        loop {
            if filled == batch.len() {
                batch.push(Vec::new());
            }
            if !decoder
                .next_row_into(&mut batch[filled])
                .map_err(decode_err)?
            {
                break;
            }
            filled += 1;
            if filled == BATCH_ROWS {
                n += send(tx, std::mem::replace(&mut batch, pool.take()), progress).await?;
                filled = 0;
            }
        }
    }
    decoder.finish().map_err(decode_err)?;
    batch.truncate(filled);
    n += send(tx, batch, progress).await?;
    Ok(n)
}

async fn send(
    tx: &mpsc::Sender<Feed>,
    batch: Vec<Vec<crate::model::Value>>,
    progress: Option<&Progress>,
) -> Result<u64, SyncError> {
    if batch.is_empty() {
        return Ok(0);
    }
    let n = batch.len() as u64;
    tx.send(Feed::Rows(batch))
        .await
        .map_err(|_| SyncError::SinkLost)?;
    if let Some(p) = progress {
        p.add(n);
    }
    Ok(n)
}
