//! Resyncs from the command line and by themselves (see [`crate::sync::resync`] for how a re-copy
//! stays exact while the stream runs).
//!
//! - `fig-receiver resync TABLE…` re-copies the named tables. When a receiver is streaming the
//!   sink's slot, its stream carries the sink past the copy's position; when none is, the command
//!   streams itself (as `run` would) until the tables are swapped in, then stops and exits.
//! - `run` (unbounded, `resync.auto` on) re-copies tables that went out of sync (SQLite), joined the
//!   stream after the initial copy, or whose partitions changed, retrying a failed re-copy with a
//!   growing pause (30 s doubling, at most 15 min).
//!
//! Into a JSON Lines file, which only `run`'s writer may write, `fig-receiver resync` leaves a
//! request beside the file ([`crate::sink::jsonl::requests`]) and waits until its sidecar records
//! the new copies; the `run` writing the file serves it (the command runs one itself when none is
//! running), putting each copy in at its stream position.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::source::SourceFacts;
use super::{membership, RunError};
use crate::config::{Config, SinkTarget};
use crate::sink::jsonl;
use crate::sink::SinkError;
use crate::sync::resync::{resync, Destination};
use crate::sync::{SinkHandle, Summary, SyncError};

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
    let path = match &config.sink {
        SinkTarget::Sqlite(path) => path,
        SinkTarget::Jsonl(Some(path)) => return jsonl_command(config, path, tables, shutdown).await,
        SinkTarget::Jsonl(None) => {
            return Err(RunError::Resync(SyncError::Unsupported(
                "a re-copy into stdout is not possible: a stream has nothing beside it to hold the request or record the copy; write the stream to a JSON Lines file (--sink jsonl:PATH) or a SQLite file".into(),
            )))
        }
    };
    if !path.exists() {
        return Err(RunError::Resync(SyncError::Unsupported(format!(
            "there is no sink at {}: a resync repairs a sink that `fig-receiver run` fills; check --sink",
            path.display()
        ))));
    }
    let watch = crate::sink::open::drift_watch(config);
    let sink = SinkHandle::new(crate::sink::open::open(config, watch).map_err(RunError::Sink)?);
    let checkpoint = sink
        .with(|s| s.checkpoint())
        .await
        .map_err(RunError::Resync)?
        .ok_or_else(|| {
            RunError::Resync(SyncError::Unsupported(format!(
                "the sink {} holds no stream yet: start it with `fig-receiver run` first",
                path.display()
            )))
        })?;
    // Only tables the slot streams: a re-copy of any other would be a mirror nothing keeps up.
    refuse_unstreamed(config, &checkpoint.plugin, tables).await?;
    let facts = SourceFacts::read(&config.source, &config.slot, None).await?;
    // Without a receiver on the slot nothing moves the sink past the copy: stream here.
    let streaming = facts.slot.as_ref().is_some_and(|s| s.active);
    let copy = resync(
        config,
        &checkpoint.plugin,
        tables,
        Destination::Shared(&sink),
        shutdown,
    );
    with_own_stream(config, !streaming, copy).await
}

/// Runs `work` beside a stream of this process's own (`run`, unbounded, `resync.auto` off: this
/// process re-copies what it was asked to, nothing else) when `own` is set, and stops that stream
/// once `work` is done. The stream ending first is a failure: nothing else moves the sink.
async fn with_own_stream<T>(
    config: &Config,
    own: bool,
    work: impl std::future::Future<Output = Result<T, SyncError>>,
) -> Result<T, RunError> {
    if !own {
        return work.await.map_err(RunError::Resync);
    }
    info!(slot = %config.slot, "no receiver is streaming into the sink: streaming here until the re-copies are in");
    let mut own = config.clone();
    own.resync_auto = false;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut stream = tokio::spawn(async move { super::run(&own, None, stopped).await });
    tokio::pin!(work);
    let result = tokio::select! {
        r = &mut work => r.map_err(RunError::Resync),
        ended = &mut stream => return match ended {
            Ok(Err(e)) => Err(e),
            _ => Err(RunError::SinkLost),
        },
    };
    let _ = stop.send(true);
    match stream.await {
        Ok(Err(e)) if result.is_ok() => Err(e),
        _ => result,
    }
}

/// `fig-receiver resync` into a JSON Lines file: requests beside the file, served by the `run`
/// writing it (this process's own when none is), done when the sidecar records newer copies.
async fn jsonl_command(
    config: &Config,
    path: &std::path::Path,
    tables: &[(String, String)],
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Summary, RunError> {
    let started = std::time::Instant::now();
    let checkpoint = match path.exists() {
        true => jsonl::checkpoint_of_file(path).map_err(RunError::Sink)?,
        false => None,
    };
    let Some(checkpoint) = checkpoint else {
        return Err(RunError::Resync(SyncError::Unsupported(format!(
            "the JSON Lines file {} holds no stream yet: start it with `fig-receiver run` (a `run` making its initial copy, which copies every streamed table, has no stream until the copy is in)",
            path.display()
        ))));
    };
    refuse_unstreamed(config, &checkpoint.plugin, tables).await?;
    let copied_before = jsonl::copies_of_file(path).map_err(RunError::Sink)?;
    let position_of = |copies: &[jsonl::Copied], t: &(String, String)| {
        copies
            .iter()
            .find(|c| (&c.schema, &c.table) == (&t.0, &t.1))
            .map(|c| c.position)
    };
    jsonl::requests::request(path, tables).map_err(RunError::Sink)?;
    // The writer's lock is free: no `run` writes the file, so this process streams.
    let own = crate::sink::lock::WriterLock::acquire(path)
        .map(drop)
        .is_ok();
    let wait = async {
        let mut shutdown = shutdown;
        loop {
            let now = jsonl::copies_of_file(path).map_err(SyncError::Sink)?;
            let done: Vec<&jsonl::Copied> = tables
                .iter()
                .filter_map(|t| {
                    let c = now.iter().find(|c| (&c.schema, &c.table) == (&t.0, &t.1))?;
                    (Some(c.position) > position_of(&copied_before, t)).then_some(c)
                })
                .collect();
            if done.len() == tables.len() {
                return Ok(Summary {
                    tables: done.len(),
                    rows: done.iter().map(|c| c.rows).sum(),
                    seconds: started.elapsed().as_secs_f64(),
                    unfinished: Vec::new(),
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return Err(SyncError::Stopped);
                    }
                }
            }
        }
    };
    if !own {
        info!(file = %path.display(), "a receiver is writing the file: the re-copies are left for it");
    }
    with_own_stream(config, own, wait).await
}

/// Refuses tables the slot does not stream: a re-copy of one would be a mirror nothing keeps up.
async fn refuse_unstreamed(
    config: &Config,
    plugin: &str,
    tables: &[(String, String)],
) -> Result<(), RunError> {
    let streamed = streamed_tables(config, plugin)
        .await
        .map_err(RunError::Resync)?;
    let not_streamed: Vec<String> = tables
        .iter()
        .filter(|t| !streamed.contains(t))
        .map(|(s, t)| format!("{s}.{t}"))
        .collect();
    if !not_streamed.is_empty() {
        return Err(RunError::Resync(SyncError::Unsupported(format!(
            "{} {} not streamed by the slot (not in the publication or replication.tables): a re-copy would be a mirror nothing keeps up; sync it with `fig-receiver snapshot --sync TABLE=snapshot` instead",
            not_streamed.join(", "),
            if not_streamed.len() == 1 { "is" } else { "are" }
        ))));
    }
    Ok(())
}

/// What a sink file records of its copies, read without writing: enough to tell which streamed
/// tables have none and which partitioned tables' copies read other leaves than they have now.
struct Copies {
    /// The plugin of the stream (none: no stream yet, nothing to compare).
    plugin: Option<String>,
    /// Whether an initial copy was made (without one, by `replication.initial_copy = false`, a
    /// table's mirror holds only what changed since the slot's creation, by design).
    initial: bool,
    known: HashSet<(String, String)>,
    /// The leaves each partitioned table's latest copy read, by mirror name.
    partitions: HashMap<String, Vec<u32>>,
}

impl Copies {
    fn of(target: &SinkTarget) -> Result<Copies, SinkError> {
        match target {
            SinkTarget::Sqlite(path) => {
                let (known, initial) = crate::sink::sqlite::known_tables(path)?;
                Ok(Copies {
                    plugin: crate::sink::sqlite::stream_plugin(path),
                    initial,
                    known,
                    partitions: crate::sink::sqlite::copied_partitions(path)?,
                })
            }
            SinkTarget::Jsonl(Some(path)) => {
                let copies = jsonl::copies_of_file(path)?;
                Ok(Copies {
                    plugin: jsonl::checkpoint_of_file(path)?.map(|c| c.plugin),
                    initial: !copies.is_empty(),
                    known: copies
                        .iter()
                        .map(|c| (c.schema.clone(), c.table.clone()))
                        .collect(),
                    partitions: copies
                        .iter()
                        .filter_map(|c| {
                            let leaves = c.partitions.clone()?;
                            Some((
                                crate::sink::sqlite::mirror_name(&c.schema, &c.table),
                                leaves,
                            ))
                        })
                        .collect(),
                })
            }
            SinkTarget::Jsonl(None) => Ok(Copies {
                plugin: None,
                initial: false,
                known: HashSet::new(),
                partitions: HashMap::new(),
            }),
        }
    }
}

/// The streamed tables a re-copy must settle, with why: tables the sink never saw although it
/// holds an initial copy (they joined the stream later), and partitioned tables whose leaves are
/// no longer those their latest copy read (a partition attached, detached or dropped since
/// changed the table's rows without row changes).
async fn needing_copies(
    config: &Config,
    copies: &Copies,
) -> Result<Vec<((String, String), String)>, SyncError> {
    let Some(plugin) = &copies.plugin else {
        return Ok(Vec::new());
    };
    let scheduled = crate::sync::schedule::scheduled(config);
    let mut out = Vec::new();
    let streamed = crate::sync::streamed(config, plugin).await?;
    for (t, reason) in catalog_changes(config, &streamed).await? {
        if copies.known.contains(&t) {
            out.push((t, reason.to_string()));
        }
    }
    for m in streamed {
        if out.iter().any(|(t, _)| *t == m.name()) {
            continue;
        }
        let name = m.name();
        if !copies.known.contains(&name) {
            let elsewhere = scheduled
                .iter()
                .any(|c| (&c.schema, &c.table) == (&name.0, &name.1));
            if copies.initial && !elsewhere {
                out.push((name, JOINED_WITHOUT_CHANGES.to_string()));
            }
            continue;
        }
        let Some(now) = &m.partitions else { continue };
        let mirror = crate::sink::sqlite::mirror_name(&m.schema, &m.table);
        let Some(before) = copies.partitions.get(&mirror) else {
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
        out.push((name, reason));
    }
    Ok(out)
}

/// The streamed tables that left the stream and came back, or whose enum and composite types
/// changed shape, since the last scan recorded them (see [`membership`]), with the reason; records
/// them as they are now.
async fn catalog_changes(
    config: &Config,
    streamed: &[crate::sync::catalog::Mirrored],
) -> Result<Vec<((String, String), &'static str)>, SyncError> {
    let path = match &config.sink {
        SinkTarget::Sqlite(p) | SinkTarget::Jsonl(Some(p)) => p,
        SinkTarget::Jsonl(None) => return Ok(Vec::new()),
    };
    let client = config.source.connect_sql().await?;
    let mut members = match &config.publication {
        Some(p) => crate::sync::catalog::memberships(&client, p, streamed).await?,
        None => streamed.iter().map(|m| (m.name(), String::new())).collect(),
    };
    let mut types = crate::sync::catalog::type_shapes(&client, streamed).await?;
    let now: membership::Members = streamed
        .iter()
        .map(|m| {
            let t = m.name();
            let member = membership::Member {
                member: members.remove(&t).unwrap_or_default(),
                types: Some(types.remove(&t).unwrap_or_default()),
            };
            (t, member)
        })
        .collect();
    let changed = match membership::recorded(path).map_err(SyncError::Sink)? {
        Some(before) => membership::changed(&before, &now),
        None => Vec::new(),
    };
    membership::record(path, &now).map_err(SyncError::Sink)?;
    Ok(changed)
}

/// Records `schema.table` as out of sync because of `reason`, at the sink's checkpoint. Whether that
/// worked.
async fn mark(config: &Config, schema: &str, table: &str, reason: &str) -> bool {
    let watch = crate::sink::open::drift_watch(config);
    let marked = crate::sink::open::open(config, watch).and_then(|mut sink| {
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

/// When each table whose re-copy failed may be tried again: 30 s, doubling, at most 15 min.
#[derive(Default)]
struct Retries(HashMap<(String, String), (Instant, Duration)>);

impl Retries {
    fn due(&self, table: &(String, String), now: Instant) -> bool {
        self.0.get(table).is_none_or(|(at, _)| *at <= now)
    }

    fn failed(&mut self, table: &(String, String)) -> Duration {
        let pause = self
            .0
            .get(table)
            .map_or(FIRST_RETRY, |(_, p)| (*p * 2).min(LAST_RETRY));
        self.0
            .insert(table.clone(), (Instant::now() + pause, pause));
        pause
    }

    fn done(&mut self, table: &(String, String)) {
        self.0.remove(table);
    }
}

/// `run`'s re-copier: every few seconds, the tables that need a copy are re-copied, one at a time
/// (a table whose re-copy fails does not hold back the others). `recopies`: the JSON Lines writer's
/// gate (a JSON Lines file); without it, a SQLite sink.
pub async fn auto(
    config: Config,
    recopies: Option<Arc<jsonl::Gate>>,
    renewals: Arc<std::sync::atomic::AtomicU64>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let sqlite = match &config.sink {
        SinkTarget::Sqlite(path) => Some(path.clone()),
        SinkTarget::Jsonl(Some(_)) if recopies.is_some() => None,
        SinkTarget::Jsonl(_) => return,
    };
    if let (SinkTarget::Jsonl(Some(path)), Some(_)) = (&config.sink, &recopies) {
        remove_staging_leftovers(path);
    }
    let mut sink: Option<SinkHandle> = None;
    let mut retries = Retries::default();
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
        let now = Instant::now();
        // Asked for: tables out of sync (SQLite), re-copies requested (JSON Lines).
        let mut tables: Vec<(String, String)> = match (&sqlite, &config.sink) {
            (Some(path), _) => match crate::sink::sqlite::states_of_file(path) {
                Ok(states) => states
                    .iter()
                    .map(|t| (t.schema.clone(), t.table.clone()))
                    .collect(),
                Err(_) => continue,
            },
            (None, SinkTarget::Jsonl(Some(path))) => match jsonl::requests::requested(path) {
                Ok(asked) => asked,
                Err(e) => {
                    warn!(error = %e, "cannot read the re-copy requests");
                    Vec::new()
                }
            },
            _ => Vec::new(),
        };
        if config.resync_auto && now >= next_scan {
            next_scan = now + config.resync_scan;
            let found = match Copies::of(&config.sink) {
                Ok(copies) => needing_copies(&config, &copies).await,
                Err(e) => Err(SyncError::Sink(e)),
            };
            match found {
                Ok(found) => {
                    for (t, reason) in found {
                        if tables.contains(&t) {
                            continue; // a re-copy is due already
                        }
                        warn!(table = %format!("{}.{}", t.0, t.1), %reason, "re-copying the table");
                        // On record first (SQLite), so that a copy that fails leaves it waiting,
                        // not mirrored from its first change on as if it had been copied.
                        if sqlite.is_none() || mark(&config, &t.0, &t.1, &reason).await {
                            tables.push(t);
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, "cannot compare the streamed tables with the sink's copies")
                }
            }
        }
        tables.retain(|t| retries.due(t, now));
        if tables.is_empty() {
            continue;
        }
        if sqlite.is_some() && sink.is_none() {
            let watch = crate::sink::open::drift_watch(&config);
            match crate::sink::open::open(&config, watch) {
                Ok(s) => sink = Some(SinkHandle::new(s)),
                Err(e) => {
                    warn!(error = %e, "cannot open the sink to re-copy tables out of sync");
                    continue;
                }
            }
        }
        let Ok(Copies {
            plugin: Some(plugin),
            ..
        }) = Copies::of(&config.sink)
        else {
            continue;
        };
        for table in tables {
            let name = format!("{}.{}", table.0, table.1);
            info!(table = %name, "re-copying a table");
            let into = match (&sink, &recopies, &config.sink) {
                (Some(handle), _, _) => Destination::Shared(handle),
                (None, Some(gate), SinkTarget::Jsonl(Some(path))) => {
                    Destination::Held { gate, file: path }
                }
                _ => break,
            };
            match resync(
                &config,
                &plugin,
                std::slice::from_ref(&table),
                into,
                shutdown.clone(),
            )
            .await
            {
                Ok(s) => {
                    info!(table = %name, rows = s.rows, seconds = format!("{:.1}", s.seconds), "re-copied: in sync again");
                    retries.done(&table);
                    if let SinkTarget::Jsonl(Some(path)) = &config.sink {
                        if let Err(e) = jsonl::requests::served(path, &table) {
                            warn!(table = %name, error = %e, "re-copied, but the request could not be taken off; it will be copied again");
                        }
                    }
                }
                Err(SyncError::Stopped) => return,
                Err(SyncError::Sink(e @ SinkError::ResyncRenamed { .. })) => {
                    // The stream still knows the table by its old name (a schema or a
                    // partitioned table renamed: the server sends no new definition for that): a
                    // new session brings the new one, and the next look copies it again.
                    warn!(table = %name, error = %e, "the stream still has the table's old name: renewing the session");
                    renewals.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                Err(e) => {
                    let pause = retries.failed(&table);
                    warn!(table = %name, error = %e, retry_in_secs = pause.as_secs(), "re-copying the table failed; the stream and the other tables go on");
                }
            }
        }
    }
}

/// Staging files of re-copies that never landed (a crash while one was read): only the writer of
/// the file (this process, holding its lock) stages re-copies beside it.
fn remove_staging_leftovers(file: &std::path::Path) {
    let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.recopy-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
