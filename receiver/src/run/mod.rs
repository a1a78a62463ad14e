//! `fig-receiver run`: stream the slot into the sink until `--endpos` or a stop signal, reconnecting
//! with backoff after connection losses and server restarts, and resuming by the resume rule.

mod membership;
mod progress;
pub mod resync;
mod routes;
pub mod session;
pub mod source;

use crate::config::{Config, SinkTarget};
use crate::model::Lsn;
use crate::pipeline::assemble::AssembleError;
use crate::pipeline::batch::BatchError;
use crate::replication::ReplicationError;
use crate::sink::{SinkError, SinkErrorKind};
use progress::Progress;
use session::{Ended, SinkSlot};
use source::SourceError;
use std::time::Duration;
use thiserror::Error;
use tracing::{info, warn};

/// Where `run --endpos` stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndPos {
    Lsn(Lsn),
    /// The server's WAL position when the run starts.
    Now,
}

impl std::str::FromStr for EndPos {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("now") {
            return Ok(EndPos::Now);
        }
        s.parse::<Lsn>()
            .map(EndPos::Lsn)
            .map_err(|e| format!("{s:?} is neither an LSN (X/Y) nor `now`: {e}"))
    }
}

#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    #[error(transparent)]
    Decode(crate::decode::DecodeError),
    #[error(transparent)]
    Assemble(#[from] AssembleError),
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Sink(SinkError),
    #[error("initial copy: {0}")]
    Sync(crate::sync::SyncError),
    /// A re-copy (`fig-receiver resync`).
    #[error("{0}")]
    Resync(crate::sync::SyncError),
    #[error("the server ended the replication stream")]
    StreamEnded,
    #[error(
        "the sink's writer thread failed; restart the receiver (it resumes from the checkpoint)"
    )]
    SinkLost,
    #[error("the source's catalog moved under the stream (a schema or a partitioned table renamed): reconnecting, so the server sends the tables' definitions again as they are now")]
    Renew,
    #[error("{cause}; the slot {slot:?} this run created was dropped (nothing was acknowledged from it), so the next run starts over with a new slot and a new copy")]
    CopyAbandoned { slot: String, cause: Box<RunError> },
}

impl RunError {
    /// Whether reconnecting and resuming from the checkpoint can help.
    pub fn is_transient(&self) -> bool {
        match self {
            RunError::Replication(e) => e.is_transient(),
            RunError::StreamEnded | RunError::Renew => true,
            RunError::Source(e) => e.is_transient(),
            RunError::Decode(e) => e.recovery() == crate::decode::Recovery::Reconnect,
            RunError::Batch(BatchError::UnknownRelation { .. }) => true,
            // The session lost track of the stream: a new one resumes from the checkpoint.
            RunError::Assemble(AssembleError::OutOfOrder(_)) => true,
            RunError::Sink(e) => e.kind() == SinkErrorKind::Storage,
            RunError::Sync(e) | RunError::Resync(e) => e.is_transient(),
            RunError::CopyAbandoned { cause, .. } => cause.is_transient(),
            _ => false,
        }
    }
}

/// A session that lasted this long before failing counts as healthy: retrying starts at 1 s again.
const HEALTHY_SESSION: Duration = Duration::from_secs(60);

/// Summary of a finished run.
#[derive(Debug)]
pub struct Summary {
    pub transactions: u64,
    pub rows: u64,
    pub seconds: f64,
    pub durable: Option<Lsn>,
}

/// Runs until `endpos` is durable or `shutdown` turns true. Transient failures reconnect with
/// exponential backoff (1 s to 30 s); anything else is returned.
pub async fn run(
    config: &Config,
    endpos: Option<EndPos>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<Summary, RunError> {
    // Held until this returns: one stream per sink.
    let _writer = match &config.sink {
        SinkTarget::Sqlite(p) | SinkTarget::Jsonl(Some(p)) => {
            crate::sink::lock::WriterLock::acquire(p).map_err(RunError::Sink)?
        }
        SinkTarget::Jsonl(None) => None,
    };
    let watch = crate::sink::open::drift_watch(config);
    // A JSON Lines file takes re-copies from the re-copier through its writer (the only one).
    let recopies =
        matches!(config.sink, SinkTarget::Jsonl(Some(_))).then(crate::sink::jsonl::Gate::new);
    let mut sink = SinkSlot::new(
        config.sink.clone(),
        std::sync::Arc::clone(&watch),
        recopies.clone(),
    );
    let mut progress = Progress::new(Duration::from_secs(10));
    let mut backoff = Duration::from_secs(1);
    // `now` is fixed once, before streaming, so reconnecting does not move the goal.
    let endpos = match endpos {
        Some(EndPos::Now) => Some(current_wal_position(config).await?),
        Some(EndPos::Lsn(l)) => Some(l),
        None => None,
    };
    // A configured table that does not exist is a typo to fix now, not a warning every minute.
    crate::sync::schedule::check_tables_exist(config)
        .await
        .map_err(RunError::Sync)?;
    // A sink that already holds a stream goes on streaming, whatever else is configured.
    let streams = config.streams() || holds_stream(&config.sink);
    // Snapshot and incremental tables on their schedule, beside the stream (not in a bounded
    // `--endpos` run, which is about the stream).
    let schedule = if endpos.is_none() && !crate::sync::schedule::scheduled(config).is_empty() {
        crate::sync::schedule::check_sink(config).map_err(RunError::Sync)?;
        Some(tokio::spawn(crate::sync::schedule::run_schedule(
            config.clone(),
            std::sync::Arc::clone(&watch),
            shutdown.clone(),
        )))
    } else {
        None
    };
    // Tables out of sync re-copied beside the stream (not in a bounded `--endpos` run either);
    // a JSON Lines file's re-copier also serves `fig-receiver resync` with `resync.auto` off.
    // The re-copier asks for a new session when the catalog moved under the stream.
    let renewals = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let resyncs =
        (endpos.is_none() && streams && (config.resync_auto || recopies.is_some())).then(|| {
            tokio::spawn(resync::auto(
                config.clone(),
                recopies,
                std::sync::Arc::clone(&renewals),
                shutdown.clone(),
            ))
        });
    let _stop_resyncs = AbortOnDrop(resyncs);
    if !streams {
        if let Some(h) = schedule {
            h.await
                .map_err(|_| RunError::SinkLost)?
                .map_err(RunError::Sync)?;
        }
        let (transactions, rows, seconds) = progress.totals();
        return Ok(Summary {
            transactions,
            rows,
            seconds,
            durable: None,
        });
    }
    loop {
        let attempt_started = std::time::Instant::now();
        match session::stream_once(
            config,
            &mut sink,
            endpos,
            &mut shutdown,
            &mut progress,
            &renewals,
        )
        .await
        {
            Ok(ended) => {
                let (transactions, rows, seconds) = progress.totals();
                let durable = match ended {
                    Ended::EndposReached(l) => Some(l),
                    Ended::Shutdown => None,
                };
                info!(transactions, rows, seconds, "finished");
                return Ok(Summary {
                    transactions,
                    rows,
                    seconds,
                    durable,
                });
            }
            Err(e) if e.is_transient() && !*shutdown.borrow() => {
                // A session that ran for a while was healthy: its failure starts a new series.
                if attempt_started.elapsed() >= HEALTHY_SESSION {
                    backoff = Duration::from_secs(1);
                }
                warn!(error = %e, retry_in_secs = backoff.as_secs(), "replication interrupted; will retry and resume from the checkpoint");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = async {
                        if shutdown.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    } => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                if *shutdown.borrow() {
                    // Asked to stop while waiting to reconnect: nothing is pending.
                    let (transactions, rows, seconds) = progress.totals();
                    info!(transactions, rows, seconds, "stopped while reconnecting");
                    return Ok(Summary {
                        transactions,
                        rows,
                        seconds,
                        durable: None,
                    });
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether the sink at `target` already holds a stream's checkpoint (read without writing).
fn holds_stream(target: &SinkTarget) -> bool {
    match target {
        SinkTarget::Sqlite(path) => crate::sink::sqlite::holds_checkpoint(path),
        SinkTarget::Jsonl(Some(path)) => {
            let mut sidecar = path.clone().into_os_string();
            sidecar.push(".checkpoint");
            std::path::Path::new(&sidecar).exists()
        }
        SinkTarget::Jsonl(None) => false,
    }
}

/// Ends a background task when the run that started it ends, however it ends.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

/// The server's WAL position now: what has been flushed on a primary, replayed on a standby.
async fn current_wal_position(config: &Config) -> Result<Lsn, RunError> {
    let client = config
        .source
        .connect_sql()
        .await
        .map_err(SourceError::from)?;
    let text: String = client
        .query_one(
            "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_flush_lsn() END)::text",
            &[],
        )
        .await
        .map_err(SourceError::query)?
        .get(0);
    text.parse().map_err(|e| {
        SourceError::Query {
            transient: false,
            message: format!("the server reported an unreadable WAL position {text:?}: {e}"),
        }
        .into()
    })
}
