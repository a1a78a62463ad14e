//! Resyncs from the command line and by themselves (see [`crate::sync::resync`] for how a re-copy
//! stays exact while the stream runs).
//!
//! - `fig-receiver resync TABLE…` re-copies the named tables. When a receiver is streaming the
//!   sink's slot, its stream carries the sink past the copy's position; when none is, the command
//!   streams itself (as `run` would) until the tables are swapped in, then stops and exits.
//! - `run` (unbounded, SQLite sink, `resync.auto` on) re-copies tables that went out of sync,
//!   retrying a failed re-copy with a growing pause (30 s doubling, at most 15 min).

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::source::SourceFacts;
use super::RunError;
use crate::config::{Config, SinkTarget};
use crate::sink::SinkError;
use crate::sync::{resync::resync, SinkHandle, Summary, SyncError};

/// How often `run` looks for tables out of sync.
const LOOK_EVERY: Duration = Duration::from_secs(5);
const FIRST_RETRY: Duration = Duration::from_secs(30);
const LAST_RETRY: Duration = Duration::from_secs(15 * 60);

/// `fig-receiver resync`: re-copies `tables` into the sink of `config` and returns once they are
/// in sync.
pub async fn command(
    config: &Config,
    tables: &[(String, String)],
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Summary, RunError> {
    let SinkTarget::Sqlite(path) = &config.sink else {
        return Err(RunError::Sync(SyncError::Sink(SinkError::NeedsState {
            what: "a resync".into(),
        })));
    };
    if !path.exists() {
        return Err(RunError::Sync(SyncError::Unsupported(format!(
            "there is no sink at {}: a resync repairs a sink that `fig-receiver run` fills; check --sink",
            path.display()
        ))));
    }
    let watch = super::drift_watch(config);
    let sink = SinkHandle::new(super::open_watched_sink(config, watch).map_err(RunError::Sink)?);
    let checkpoint = sink
        .with(|s| s.checkpoint())
        .await
        .map_err(RunError::Sync)?
        .ok_or_else(|| {
            RunError::Sync(SyncError::Unsupported(format!(
                "the sink {} holds no stream yet: start it with `fig-receiver run` first",
                path.display()
            )))
        })?;
    // Only tables the slot streams: a re-copy of any other would be a mirror nothing keeps up.
    let streamed = streamed_tables(config, &checkpoint.plugin)
        .await
        .map_err(RunError::Sync)?;
    let not_streamed: Vec<String> = tables
        .iter()
        .filter(|t| !streamed.contains(t))
        .map(|(s, t)| format!("{s}.{t}"))
        .collect();
    if !not_streamed.is_empty() {
        return Err(RunError::Sync(SyncError::Unsupported(format!(
            "{} {} not streamed by the slot (not in the publication or replication.tables): a re-copy would be a mirror nothing keeps up; sync it with `fig-receiver snapshot --sync TABLE=snapshot` instead",
            not_streamed.join(", "),
            if not_streamed.len() == 1 { "is" } else { "are" }
        ))));
    }
    let facts = SourceFacts::read(&config.source, &config.slot, None).await?;
    // Without a receiver on the slot nothing moves the sink past the copy: stream here.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let own_stream = match facts.slot.as_ref().is_some_and(|s| s.active) {
        true => None,
        false => {
            info!(slot = %config.slot, "no receiver is streaming the slot: streaming here until the re-copies are in");
            let mut own = config.clone();
            // This process re-copies what it was asked to; a second re-copier would compete.
            own.resync_auto = false;
            Some(tokio::spawn(async move {
                super::run(&own, None, stopped).await
            }))
        }
    };
    let copy = resync(config, &checkpoint.plugin, tables, &sink, shutdown);
    let result = match own_stream {
        None => copy.await.map_err(RunError::Sync),
        Some(mut stream) => {
            tokio::pin!(copy);
            let result = tokio::select! {
                r = &mut copy => r.map_err(RunError::Sync),
                // The stream ended first: it failed, and the copy can never be swapped in.
                ended = &mut stream => return match ended {
                    Ok(Err(e)) => Err(e),
                    _ => Err(RunError::SinkLost),
                },
            };
            let _ = stop.send(true);
            match stream.await {
                Ok(Err(e)) if result.is_ok() => return Err(e),
                _ => {}
            }
            result
        }
    };
    result
}

/// The tables the slot streams that the sink at `path` does not know, when it holds an initial
/// copy (without one, a table's mirror holds only what changed since the slot's creation, by
/// `replication.initial_copy = false`).
async fn unmirrored(
    config: &Config,
    path: &std::path::Path,
) -> Result<Vec<(String, String)>, SyncError> {
    let (known, copied) = crate::sink::sqlite::known_tables(path).map_err(SyncError::Sink)?;
    let Some(plugin) = crate::sink::sqlite::stream_plugin(path) else {
        return Ok(Vec::new());
    };
    if !copied {
        return Ok(Vec::new());
    }
    let streamed = streamed_tables(config, &plugin).await?;
    Ok(streamed
        .into_iter()
        .filter(|t| !known.contains(t))
        .filter(|(s, t)| {
            !crate::sync::schedule::scheduled(config)
                .iter()
                .any(|c| (&c.schema, &c.table) == (s, t))
        })
        .collect())
}

/// Partitioned tables (mirrored under their root) whose leaf partitions are no longer those their
/// latest copy read: a partition attached, detached or dropped since changed the table's rows
/// without row changes. With the reason, naming the partitions.
async fn repartitioned(
    config: &Config,
    path: &std::path::Path,
) -> Result<Vec<((String, String), String)>, SyncError> {
    let copied = crate::sink::sqlite::copied_partitions(path).map_err(SyncError::Sink)?;
    let Some(plugin) = crate::sink::sqlite::stream_plugin(path) else {
        return Ok(Vec::new());
    };
    if copied.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for m in crate::sync::streamed(config, &plugin).await? {
        let Some(now) = &m.partitions else { continue };
        let mirror = crate::sink::sqlite::mirror_name(&m.schema, &m.table);
        let Some(before) = copied.get(&mirror) else {
            continue;
        };
        if *before == now.leaves {
            continue;
        }
        let added = now.leaves.iter().filter(|l| !before.contains(l)).count();
        let gone = before.iter().filter(|l| !now.leaves.contains(l)).count();
        let reason = format!(
            "its partitions changed since it was copied ({added} attached or created, {gone} detached or dropped): rows came or went without row changes; a re-copy settles it"
        );
        out.push((m.name(), reason));
    }
    Ok(out)
}

/// Records a table the slot streams but the sink never saw as out of sync ("it joined after the
/// initial copy"), at the sink's checkpoint. Whether that worked.
async fn mark_unmirrored(config: &Config, schema: &str, table: &str) -> bool {
    mark(config, schema, table, JOINED_WITHOUT_CHANGES).await
}

/// Records `schema.table` as out of sync because of `reason`, at the sink's checkpoint. Whether that
/// worked.
async fn mark(config: &Config, schema: &str, table: &str, reason: &str) -> bool {
    let watch = super::drift_watch(config);
    let marked = super::open_watched_sink(config, watch).and_then(|mut sink| {
        let at = sink
            .checkpoint()?
            .map(|c| c.commit_end_lsn)
            .unwrap_or(crate::model::Lsn(0));
        sink.mark_out_of_sync(schema, table, at, reason)
    });
    match marked {
        Ok(()) => true,
        Err(e) => {
            warn!(table = %format!("{schema}.{table}"), error = %e, "cannot record a table that needs a copy");
            false
        }
    }
}

const JOINED_WITHOUT_CHANGES: &str = "the table joined the stream after the initial copy (added to the publication or the include list) and has no mirror yet; a copy settles it";

/// The tables a slot of `plugin` streams under `config`, as the initial copy lists them.
async fn streamed_tables(
    config: &Config,
    plugin: &str,
) -> Result<Vec<(String, String)>, SyncError> {
    Ok(crate::sync::streamed(config, plugin)
        .await?
        .iter()
        .map(|m| m.name())
        .collect())
}

/// `run`'s re-copier: every few seconds, the tables out of sync are re-copied.
pub async fn auto(config: Config, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let SinkTarget::Sqlite(path) = config.sink.clone() else {
        return;
    };
    let mut sink: Option<SinkHandle> = None;
    let mut not_before: HashMap<String, (Instant, Duration)> = HashMap::new();
    // The first scan at once: tables may have joined while no receiver ran.
    let mut next_scan = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LOOK_EVERY.min(config.resync_scan)) => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
        let Ok(states) = crate::sink::sqlite::states_of_file(&path) else {
            continue;
        };
        let now = Instant::now();
        let mut tables: Vec<(String, String)> = states
            .iter()
            .map(|t| (t.schema.clone(), t.table.clone()))
            .collect();
        if now >= next_scan {
            // A table added to the publication (or created) that no change has brought yet has no
            // mirror at all; a partition attached or detached changes rows without row changes.
            next_scan = now + config.resync_scan;
            match unmirrored(&config, &path).await {
                Ok(found) => {
                    if !found.is_empty() {
                        let names: Vec<String> =
                            found.iter().map(|(s, t)| format!("{s}.{t}")).collect();
                        info!(tables = %names.join(", "), "tables the slot streams have no mirror yet: copying them");
                    }
                    // On record first, so that a copy that fails leaves them waiting, not
                    // mirrored from their first change on as if they had been copied.
                    for (s, t) in found {
                        if mark_unmirrored(&config, &s, &t).await {
                            tables.push((s, t));
                        }
                    }
                }
                Err(e) => warn!(error = %e, "cannot compare the streamed tables with the sink's"),
            }
            match repartitioned(&config, &path).await {
                Ok(found) => {
                    for ((s, t), reason) in found {
                        if tables.contains(&(s.clone(), t.clone())) {
                            continue; // a re-copy is due already
                        }
                        warn!(table = %format!("{s}.{t}"), %reason, "partitions changed: re-copying the table");
                        if mark(&config, &s, &t, &reason).await {
                            tables.push((s, t));
                        }
                    }
                }
                Err(e) => warn!(error = %e, "cannot compare the partitions with the copies'"),
            }
        }
        let due: Vec<(String, String)> = tables
            .into_iter()
            .filter(|(s, t)| {
                not_before
                    .get(&format!("{s}.{t}"))
                    .is_none_or(|(at, _)| *at <= now)
            })
            .collect();
        if due.is_empty() {
            continue;
        }
        if sink.is_none() {
            let watch = super::drift_watch(&config);
            match super::open_watched_sink(&config, watch) {
                Ok(s) => sink = Some(SinkHandle::new(s)),
                Err(e) => {
                    warn!(error = %e, "cannot open the sink to re-copy tables out of sync");
                    continue;
                }
            }
        }
        let Some(handle) = &sink else { continue };
        let Some(plugin) = crate::sink::sqlite::stream_plugin(&path) else {
            continue;
        };
        // One table at a time: a table whose re-copy fails does not hold back the others.
        for table in due {
            let name = format!("{}.{}", table.0, table.1);
            info!(table = %name, "re-copying a table out of sync");
            match resync(
                &config,
                &plugin,
                std::slice::from_ref(&table),
                handle,
                shutdown.clone(),
            )
            .await
            {
                Ok(s) => {
                    info!(table = %name, rows = s.rows, seconds = format!("{:.1}", s.seconds), "re-copied: in sync again");
                    not_before.remove(&name);
                }
                Err(SyncError::Stopped) => return,
                Err(e) => {
                    let pause = not_before
                        .get(&name)
                        .map_or(FIRST_RETRY, |(_, p)| (*p * 2).min(LAST_RETRY));
                    not_before.insert(name.clone(), (Instant::now() + pause, pause));
                    warn!(table = %name, error = %e, retry_in_secs = pause.as_secs(), "re-copying the table failed; the stream and the other tables go on");
                }
            }
        }
    }
}
