//! One replication session: connect, apply the resume rule, stream, deliver, acknowledge.
//!
//! ```text
//! XLogData ─▶ decoder ─▶ assembler ─▶ (drop if end ≤ durable) ─▶ batch ─▶ sink.write(batch, C)
//!                                                                              │ Ok
//! server ◀── standby status (flush = C) ◀── durable = C ◀──────────────────────┘
//! Keepalive (nothing in flight, nothing pending) ─▶ sink.write([], C = wal_end) ─▶ same path
//! a transaction above batch_max_rows ─▶ sink.write_large(spill file, read lazily, C) ─▶ same path
//! ```
//!
//! One batch write is in flight at a time, on the blocking thread pool, while the next batch is
//! decoded and assembled; `durable` moves only when that write returns.
//!
//! Ack rule (DESIGN.md rule 1): the flush position sent is always a checkpoint the sink has made
//! durable: the end of a commit, or, when idle with nothing in flight, a keepalive's WAL end (stored
//! in the sink first, so the resume rule still holds after a crash). Never a position inside a
//! transaction.

use super::progress::Progress;
use super::source::{
    choose_plugin, own_orphan_slot, resume_point, SourceError, SourceFacts, Start,
};
use super::RunError;
use crate::config::{Config, SinkTarget};
use crate::decode::{self, DecodeError, FigState, PgState, Recovery, TypeRegistry};
use crate::model::{Event, Lsn, Relation};
use crate::pipeline::assemble::{Assembler, Items};
use crate::pipeline::batch::{BatchError, Converter, Definitions, Relations};
use crate::replication::{ReplicationClient, ReplicationStream, SnapshotAction, StreamEvent};
use crate::sink::{Checkpoint, Sink, SinkError, Transaction, TransactionHead};
use crate::sync::SnapshotSource;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How the session ended when it did not fail.
pub enum Ended {
    /// `--endpos` reached: everything up to it is durable.
    EndposReached(Lsn),
    /// Asked to stop: everything received and committed was flushed first.
    Shutdown,
}

/// The decoder of the chosen plugin, with its session state and the type registry it reads column
/// types by: pgoutput for every column, figoutput only for arrays whose elements are arrays (it
/// starts with the built-in types and loads the catalog's the first time it needs one).
enum Decoder {
    Fig {
        state: FigState,
        types: TypeRegistry,
    },
    Pg {
        state: PgState,
        types: TypeRegistry,
    },
}

impl Decoder {
    fn relation(&self, relid: u32) -> Option<crate::model::Relation> {
        match self {
            Decoder::Fig { state, .. } => state.relation(relid).cloned(),
            Decoder::Pg { state, .. } => state.relation(relid).cloned(),
        }
    }

    fn types_mut(&mut self) -> &mut TypeRegistry {
        match self {
            Decoder::Fig { types, .. } | Decoder::Pg { types, .. } => types,
        }
    }

    /// The session's definitions as they are now, for a converter on another thread.
    fn relations_now(&self) -> Box<dyn Fn(u32) -> Option<Relation> + Send> {
        match self {
            Decoder::Fig { state: s, .. } => {
                let s = s.clone();
                Box::new(move |relid| s.relation(relid).cloned())
            }
            Decoder::Pg { state, .. } => {
                let s = state.clone();
                Box::new(move |relid| s.relation(relid).cloned())
            }
        }
    }
}

/// The sink lives on a blocking thread while it writes; the session holds it in between. It is
/// opened only once the source has been reached and checked, so a run that cannot start (server
/// unreachable, wrong password, missing publication) leaves no sink file behind.
pub struct SinkSlot {
    target: SinkTarget,
    watch: std::sync::Arc<crate::drift::Watch>,
    /// Re-copies a JSON Lines writer puts in at their positions (see `sink::jsonl::Gate`).
    recopies: Option<std::sync::Arc<crate::sink::jsonl::Gate>>,
    sink: Option<Box<dyn Sink>>,
    /// At most one batch write runs while the session decodes the next batch. It is never
    /// abandoned: every other use of the sink waits for it first, also in the next session, so a
    /// sink file never has two writers.
    in_flight: Option<InFlight>,
}

/// A batch write running on the blocking thread pool, and what it will make durable.
struct InFlight {
    work: tokio::task::JoinHandle<WriteDone>,
    written: Written,
}

/// The sink back from its thread, the write's outcome, and the batch to free.
type WriteDone = (Box<dyn Sink>, Result<(), SinkError>, Vec<Transaction>);

/// What a finished batch write made durable.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub end: Lsn,
    pub txns: usize,
    pub rows: usize,
}

impl SinkSlot {
    pub fn new(
        target: SinkTarget,
        watch: std::sync::Arc<crate::drift::Watch>,
        recopies: Option<std::sync::Arc<crate::sink::jsonl::Gate>>,
    ) -> Self {
        SinkSlot {
            target,
            watch,
            recopies,
            sink: None,
            in_flight: None,
        }
    }

    fn open(&mut self) -> Result<&mut Box<dyn Sink>, RunError> {
        if self.sink.is_none() {
            let sink = crate::sink::open::open_for_stream(
                &self.target,
                std::sync::Arc::clone(&self.watch),
                self.recopies.as_ref(),
            )
            .map_err(RunError::Sink)?;
            self.sink = Some(sink);
        }
        self.sink.as_mut().ok_or(RunError::SinkLost)
    }

    /// Writes `batch` with `checkpoint` and waits until it is durable.
    pub async fn write(
        &mut self,
        batch: Vec<Transaction>,
        checkpoint: Checkpoint,
    ) -> Result<(), RunError> {
        self.settle().await?;
        let written = Written {
            end: checkpoint.commit_end_lsn,
            txns: batch.len(),
            rows: 0,
        };
        self.start_write(batch, checkpoint, written)?;
        self.settle().await.map(drop)
    }

    /// Starts writing `batch` with `checkpoint` on the blocking thread pool and returns at once;
    /// [`SinkSlot::settle`] reports when it is durable. Only one write may be in flight.
    pub fn start_write(
        &mut self,
        batch: Vec<Transaction>,
        checkpoint: Checkpoint,
        written: Written,
    ) -> Result<(), RunError> {
        if self.in_flight.is_some() {
            return Err(RunError::SinkLost);
        }
        self.open()?;
        let mut sink = self.sink.take().ok_or(RunError::SinkLost)?;
        // The batch comes back to be freed here: the sink thread is the one that limits throughput,
        // and memory is freed faster by the thread that allocated it.
        let work = tokio::task::spawn_blocking(move || {
            let r = sink.write(&batch, &checkpoint);
            (sink, r, batch)
        });
        self.in_flight = Some(InFlight { work, written });
        Ok(())
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Waits for the write in flight, if any, and returns what it made durable. Cancel-safe: if
    /// the wait is dropped, the write stays in flight and the next call waits for it again.
    pub async fn settle(&mut self) -> Result<Option<Written>, RunError> {
        let Some(in_flight) = self.in_flight.as_mut() else {
            return Ok(None);
        };
        let joined = (&mut in_flight.work).await;
        let written = in_flight.written;
        self.in_flight = None;
        let (sink, result, batch) = joined.map_err(|_| RunError::SinkLost)?;
        drop(batch);
        self.sink = Some(sink);
        result.map_err(RunError::Sink)?;
        Ok(Some(written))
    }

    /// Streams one transaction too large to hold in memory into the sink ([`Sink::write_large`]):
    /// its items are read back from the spill file and converted one at a time on the blocking
    /// thread. Returns the number of changes and the definitions it left in force.
    pub async fn write_large<S>(
        &mut self,
        items: Items,
        converter: Converter<S>,
        checkpoint: Checkpoint,
    ) -> Result<(usize, Definitions), RunError>
    where
        S: Fn(u32) -> Option<Relation> + Send + 'static,
    {
        self.settle().await?;
        self.open()?;
        let mut sink = self.sink.take().ok_or(RunError::SinkLost)?;
        let (sink, result) = tokio::task::spawn_blocking(move || {
            let r = stream_large(&mut *sink, items, converter, &checkpoint);
            (sink, r)
        })
        .await
        .map_err(|_| RunError::SinkLost)?;
        self.sink = Some(sink);
        result
    }

    /// The stored checkpoint, once any write a previous session left in flight has ended.
    pub async fn checkpoint(&mut self) -> Result<Option<Checkpoint>, RunError> {
        self.settle().await?;
        self.open()?.checkpoint().map_err(RunError::Sink)
    }

    /// Where the sink's unfinished-or-finished initial copy began, if it holds one
    /// ([`Sink::initial_copy`]).
    pub async fn initial_copy(&mut self) -> Result<Option<Lsn>, RunError> {
        self.settle().await?;
        self.open()?.initial_copy().map_err(RunError::Sink)
    }

    /// [`Sink::note_slot_intent`].
    pub async fn note_slot_intent(&mut self, slot: &str) -> Result<(), RunError> {
        self.settle().await?;
        self.open()?.note_slot_intent(slot).map_err(RunError::Sink)
    }

    /// [`Sink::slot_intent`].
    pub async fn slot_intent(&mut self) -> Result<Option<String>, RunError> {
        self.settle().await?;
        self.open()?.slot_intent().map_err(RunError::Sink)
    }

    /// Copies the streamed tables into the sink under `source`'s snapshot (see [`crate::sync`]).
    pub async fn initial_copy_now(
        &mut self,
        config: &Config,
        plugin: &str,
        source: SnapshotSource,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), RunError> {
        self.settle().await?;
        self.open()?;
        let sink = self.sink.take().ok_or(RunError::SinkLost)?;
        let (sink, result) =
            crate::sync::initial_copy(config, plugin, sink, source, shutdown).await;
        self.sink = sink;
        result.map(drop).map_err(RunError::Sync)
    }
}

/// The body of [`SinkSlot::write_large`], on the blocking thread. A failure of the pipeline midway
/// (an unreadable spill file, an unknown relation) reaches the sink as [`SinkError::Upstream`], so it
/// stores nothing, and is returned as the pipeline's own error, so the run decides by its kind.
fn stream_large<S>(
    sink: &mut dyn Sink,
    items: Items,
    mut converter: Converter<S>,
    checkpoint: &Checkpoint,
) -> Result<(usize, Definitions), RunError>
where
    S: Fn(u32) -> Option<Relation>,
{
    let head = converter.head();
    let items = items.read()?;
    let mut upstream: Option<BatchError> = None;
    let written = {
        let mut pieces = converter.pieces(items).map(|piece| {
            piece.map_err(|e| {
                let reason = e.to_string();
                upstream = Some(e);
                SinkError::Upstream {
                    commit_lsn: head.commit_lsn,
                    reason,
                }
            })
        });
        sink.write_large(&head, &mut pieces, checkpoint)
            // A sink that skipped a covered transaction read nothing: its definitions still count.
            .and_then(|()| pieces.try_for_each(|piece| piece.map(drop)))
    };
    match (written, upstream) {
        (Ok(()), _) => Ok((converter.changes() as usize, converter.finish())),
        (Err(_), Some(e)) => Err(RunError::Batch(e)),
        (Err(e), None) => Err(RunError::Sink(e)),
    }
}

pub async fn stream_once(
    config: &Config,
    sink: &mut SinkSlot,
    endpos: Option<Lsn>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    progress: &mut Progress,
    renewals: &std::sync::atomic::AtomicU64,
) -> Result<Ended, RunError> {
    // Asked to renew after this (see [`super::renew`]): a new session, whose server sends every
    // table's definition again, as the catalog has it now.
    let renewal = renewals.load(std::sync::atomic::Ordering::SeqCst);
    let facts =
        SourceFacts::read(&config.source, &config.slot, config.publication.as_deref()).await?;
    if let (Some(p), Some(false)) = (&config.publication, facts.publication_exists) {
        return Err(SourceError::NoPublication(p.clone()).into());
    }
    let (plugin, why) = choose_plugin(config.plugin, &facts, &config.slot)?;
    info!(plugin = %plugin, reason = %why, "plugin chosen");

    let mut repl = ReplicationClient::connect(&config.source).await?;
    let system = repl.identify_system().await?;
    let stored = sink.checkpoint().await?;
    let initial = sink.initial_copy().await?;
    let resumed = resume_point(
        stored.as_ref(),
        &facts,
        (system.systemid, system.timeline),
        &config.slot,
        &plugin,
        initial,
    );
    let resumed = match resumed {
        Err(SourceError::SlotWithoutCheckpoint { .. })
            if own_orphan_slot(&facts, &config.slot, sink.slot_intent().await?.as_deref()) =>
        {
            warn!(slot = %config.slot, "the slot this sink's previous run created holds nothing it recorded (that run ended before its copy began): dropping it and starting over");
            repl.drop_slot(&config.slot).await?;
            Ok(Start::CreateSlot)
        }
        other => other,
    };
    let start = match resumed? {
        Start::Resume(lsn) => lsn,
        Start::CreateSlot => {
            if !config.create_slot {
                return Err(SourceError::NoSlot {
                    slot: config.slot.clone(),
                }
                .into());
            }
            let export = if config.initial_copy {
                SnapshotAction::Export
            } else {
                SnapshotAction::NoExport
            };
            // Recorded first: killed right after the slot exists, the next run knows it is ours.
            sink.note_slot_intent(&config.slot).await?;
            let slot = repl
                .create_logical_slot(&config.slot, &plugin, export, false)
                .await?;
            info!(slot = %config.slot, consistent_point = %slot.consistent_point, "created the replication slot");
            crate::failpoint::hit("after-slot-created");
            if let (true, Some(name)) = (config.initial_copy, slot.snapshot_name.clone()) {
                // The replication connection stays idle meanwhile: that keeps the snapshot valid.
                let source = SnapshotSource::Exported {
                    name,
                    position: slot.consistent_point,
                };
                if let Err(e) = sink
                    .initial_copy_now(config, &plugin, source, shutdown.clone())
                    .await
                {
                    let at = slot.consistent_point;
                    return Err(abandon_slot(&mut repl, sink, config, at, e).await);
                }
            }
            // The first checkpoint: the sink now owns this slot's position, so a restart resumes.
            let cp = checkpoint(&system, config, &plugin, slot.consistent_point);
            sink.write(Vec::new(), cp).await?;
            slot.consistent_point
        }
        Start::FinishInitialCopy(position) => {
            info!(slot = %config.slot, %position, "finishing the initial copy a restart interrupted");
            let source = SnapshotSource::Fresh { position };
            sink.initial_copy_now(config, &plugin, source, shutdown.clone())
                .await?;
            sink.write(Vec::new(), checkpoint(&system, config, &plugin, position))
                .await?;
            position
        }
    };
    info!(from = %start, endpos = ?endpos.map(|l| l.to_string()), "streaming");

    if plugin == "figoutput" && !config.tables.is_empty() {
        // Every session, not only the first: an include pattern naming no table would stream
        // nothing of it, silently (the copy checks the same at the start).
        crate::sync::streamed(config, &plugin)
            .await
            .map_err(RunError::Sync)?;
    }
    let (options, mut decoder) = plugin_setup(&plugin, config, &facts).await?;
    let mut stream = repl.start_logical(&config.slot, start, &options).await?;
    stream.set_status_interval(config.status_interval);
    let mut assembler = Assembler::new(config.spill_dir.clone(), config.spill_bytes);
    let mut relations = Relations::default();
    let mut router = super::routes::Router::new(config.partition_mirrors);
    let mut durable = start;
    let mut batch = Batch::default();
    let mut last_wal_end = start;
    let mut last_activity = Instant::now();
    let mut reached = false;
    let cp = |end: Lsn| checkpoint(&system, config, &plugin, end);

    loop {
        // While a write is in flight its end wakes the loop; a due batch waits for it.
        let deadline = match sink.in_flight() {
            true => None,
            false => batch.started.map(|t| t + config.batch_max_delay),
        };
        let idle_tick = tokio::time::sleep(Duration::from_millis(if endpos.is_some() {
            200
        } else {
            1000
        }));
        tokio::select! {
            ev = stream.next() => {
                match ev? {
                    None => return Err(RunError::StreamEnded),
                    Some(StreamEvent::XLogData { data, wal_end, .. }) => {
                        last_wal_end = last_wal_end.max(wal_end);
                        last_activity = Instant::now();
                        let events = decode_message(&mut decoder, &data, &config.source).await?;
                        if let Some(routes) = router.observe(&events, &config.source).await? {
                            relations.set_routes(routes);
                        }
                        for event in events {
                            let Some(committed) = assembler.push(event)? else { continue };
                            if committed.end_lsn <= durable {
                                continue; // already in the sink (resume rule)
                            }
                            if endpos.is_some_and(|e| committed.commit_lsn > e) {
                                reached = true;
                                break;
                            }
                            if committed.items.len_hint() > config.batch_max_rows as u64 {
                                // Too large to hold: what is pending goes first (commit order), then
                                // this one is streamed from its spill file straight into the sink.
                                if let Some(w) = keeping_alive(&mut stream, sink.settle()).await? {
                                    confirm(w, &mut durable, &mut stream, progress, last_wal_end);
                                }
                                if let Some(end) = batch.end() {
                                    let written = batch.written(end);
                                    sink.start_write(batch.take(), cp(end), written)?;
                                    if let Some(w) = keeping_alive(&mut stream, sink.settle()).await? {
                                        confirm(w, &mut durable, &mut stream, progress, last_wal_end);
                                    }
                                }
                                let end = committed.end_lsn;
                                let head = TransactionHead::from(&committed);
                                let converter = relations.converter(head, decoder.relations_now());
                                let work = sink.write_large(committed.items, converter, cp(end));
                                let (rows, definitions) = keeping_alive(&mut stream, work).await?;
                                relations.adopt(definitions);
                                let w = Written { end, txns: 1, rows };
                                confirm(w, &mut durable, &mut stream, progress, last_wal_end);
                                continue;
                            }
                            batch.push(relations.convert(committed, |relid| decoder.relation(relid))?);
                        }
                    }
                    Some(StreamEvent::Keepalive { wal_end, .. }) => {
                        last_wal_end = last_wal_end.max(wal_end);
                        // A streamed transaction still open commits after this keepalive, so past
                        // the end position: only a transaction being received holds the end back.
                        if endpos.is_some_and(|e| wal_end >= e) && !assembler.in_transaction() {
                            reached = true;
                        }
                    }
                }
            }
            written = sink.settle(), if sink.in_flight() => {
                if let Some(w) = written? {
                    confirm(w, &mut durable, &mut stream, progress, last_wal_end);
                }
            }
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d.into()).await, None => std::future::pending().await } } => {}
            _ = idle_tick => {
                if renewals.load(std::sync::atomic::Ordering::SeqCst) != renewal {
                    return Err(RunError::Renew);
                }
                if endpos.is_some() {
                    // Ask for a keepalive now rather than in wal_sender_timeout / 2.
                    stream.send_status(stream.received(), durable, durable, true).await?;
                }
            }
            _ = async {
                // A dropped sender means nobody can ask us to stop: wait forever, not in a loop.
                if shutdown.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            } => {
                info!("stopping: flushing what is committed");
                reached = true;
            }
        }

        // Decoding goes on while one batch is written (DESIGN.md rule 1 holds: a batch is
        // confirmed only once its write has returned). A batch due by age waits for the write in
        // flight, so it grows meanwhile; a full one, or the end of the run, waits for it here.
        if batch.due(config, reached) && (!sink.in_flight() || batch.full(config) || reached) {
            if let Some(w) = keeping_alive(&mut stream, sink.settle()).await? {
                confirm(w, &mut durable, &mut stream, progress, last_wal_end);
            }
            let end = batch.end().unwrap_or(durable);
            let written = batch.written(end);
            sink.start_write(batch.take(), cp(end), written)?;
        } else if batch.pending.is_empty()
            && !sink.in_flight()
            && !assembler.in_flight()
            && last_wal_end > durable
            && (reached || last_activity.elapsed() >= Duration::from_secs(1))
        {
            // Idle: store the keepalive's WAL end as the checkpoint, then confirm it, so the
            // server can recycle WAL while no change of ours is waiting.
            let wal_end = match endpos {
                Some(e) if reached => last_wal_end.min(e.max(durable)),
                _ => last_wal_end,
            };
            if wal_end > durable {
                keeping_alive(&mut stream, sink.write(Vec::new(), cp(wal_end))).await?;
                durable = wal_end;
                stream.set_flushed(durable);
            }
        }
        stream.send_status_if_due().await?;
        progress.tick(durable, last_wal_end);

        if reached && batch.pending.is_empty() {
            if let Some(w) = keeping_alive(&mut stream, sink.settle()).await? {
                confirm(w, &mut durable, &mut stream, progress, last_wal_end);
            }
            stream.send_status_now().await?;
            if *shutdown.borrow() {
                let _ = stream.finish().await;
                return Ok(Ended::Shutdown);
            }
            if endpos.is_some() && !assembler.in_transaction() {
                let _ = stream.finish().await;
                return Ok(Ended::EndposReached(durable));
            }
        }
    }
}

/// An initial copy under a new slot failed. When the sink recorded the copy, the next run
/// finishes it from the slot (`Start::FinishInitialCopy`) and the slot stays. Otherwise nothing
/// could use the slot: it is dropped (nothing was ever acknowledged from it), so it neither holds
/// WAL nor blocks the next run, which starts over with a new one.
async fn abandon_slot(
    repl: &mut ReplicationClient,
    sink: &mut SinkSlot,
    config: &Config,
    at: Lsn,
    failure: RunError,
) -> RunError {
    let slot = config.slot.as_str();
    if matches!(sink.initial_copy().await, Ok(Some(p)) if p == at) {
        return failure;
    }
    // Over the replication connection; when the failure took that connection with it, the slot is
    // inactive and a plain SQL connection can drop it.
    let dropped = match repl.drop_slot(slot).await {
        Ok(()) => Ok(()),
        Err(_) => match config.source.connect_sql().await {
            Ok(client) => client
                .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                .await
                .map(drop)
                .map_err(|e| crate::conn::describe_sql_error(&e)),
            Err(e) => Err(e.to_string()),
        },
    };
    match dropped {
        Ok(()) => {
            warn!(slot = %slot, "the initial copy failed before anything of it was recorded: the slot this run created is dropped, the next run starts over");
            RunError::CopyAbandoned {
                slot: slot.to_string(),
                cause: Box::new(failure),
            }
        }
        Err(e) => {
            warn!(slot = %slot, error = %e, "the initial copy failed and the slot this run created could not be dropped: drop it by hand (SELECT pg_drop_replication_slot(...)) before the next run");
            failure
        }
    }
}

/// A write has returned: its end is durable, so it is what the server may now be told.
fn confirm(
    w: Written,
    durable: &mut Lsn,
    stream: &mut ReplicationStream,
    progress: &mut Progress,
    wal_end: Lsn,
) {
    *durable = w.end;
    stream.set_flushed(w.end);
    progress.delivered(w.txns, w.rows, w.end, wal_end);
}

/// Committed transactions waiting to be written together.
#[derive(Default)]
struct Batch {
    pending: Vec<Transaction>,
    rows: usize,
    started: Option<Instant>,
}

impl Batch {
    fn push(&mut self, txn: Transaction) {
        self.rows += txn.changes.len();
        self.pending.push(txn);
        self.started.get_or_insert_with(Instant::now);
    }

    /// The end LSN the batch's checkpoint covers.
    fn end(&self) -> Option<Lsn> {
        self.pending.last().map(|t| t.end_lsn)
    }

    /// Full enough, old enough, or the run is ending.
    fn due(&self, config: &Config, ending: bool) -> bool {
        !self.pending.is_empty()
            && (ending
                || self.full(config)
                || self
                    .started
                    .is_some_and(|t| t.elapsed() >= config.batch_max_delay))
    }

    fn full(&self, config: &Config) -> bool {
        self.rows >= config.batch_max_rows
    }

    /// What writing the batch up to `end` will make durable. Read before [`Batch::take`].
    fn written(&self, end: Lsn) -> Written {
        Written {
            end,
            txns: self.pending.len(),
            rows: self.rows,
        }
    }

    fn take(&mut self) -> Vec<Transaction> {
        self.rows = 0;
        self.started = None;
        std::mem::take(&mut self.pending)
    }
}

/// Runs a sink write while still answering the server: a long write (a large transaction into
/// SQLite) must not let `wal_sender_timeout` end the connection. The status sent is the durable
/// position from before the write, which is all that may be confirmed.
async fn keeping_alive<T>(
    stream: &mut ReplicationStream,
    work: impl std::future::Future<Output = Result<T, RunError>>,
) -> Result<T, RunError> {
    tokio::pin!(work);
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + KEEPALIVE_DURING_WRITES,
        KEEPALIVE_DURING_WRITES,
    );
    // The write is never abandoned: a sink thread still writing while a new session reopened the
    // sink would make two writers of one file. A failed status send is reported after the write.
    let mut stream_error = None;
    let result = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = tick.tick(), if stream_error.is_none() => {
                if let Err(e) = stream.send_status_now().await {
                    stream_error = Some(e);
                }
            }
        }
    };
    match stream_error {
        Some(e) => result.and(Err(e.into())),
        None => result,
    }
}

/// How often the server hears from us while the sink is busy: well inside the default 60 s
/// `wal_sender_timeout`.
const KEEPALIVE_DURING_WRITES: Duration = Duration::from_secs(5);

fn checkpoint(
    system: &crate::replication::SystemInfo,
    config: &Config,
    plugin: &str,
    end: Lsn,
) -> Checkpoint {
    Checkpoint {
        system_id: system.systemid,
        timeline: system.timeline,
        slot: config.slot.clone(),
        plugin: plugin.to_string(),
        commit_end_lsn: end,
    }
}

/// Plugin options for START_REPLICATION, and the matching decoder.
async fn plugin_setup(
    plugin: &str,
    config: &Config,
    facts: &SourceFacts,
) -> Result<(Vec<(String, String)>, Decoder), RunError> {
    let mut options: Vec<(String, String)> = Vec::new();
    if plugin == "figoutput" {
        options.push((
            "format_version".into(),
            fig_format::FORMAT_VERSION.to_string(),
        ));
        if let Some(p) = &config.publication {
            options.push(("publication_names".into(), p.clone()));
        }
        if config.include_generated {
            options.push(("include_generated".into(), "true".into()));
        }
        if !config.tables.is_empty() {
            options.push(("include_tables".into(), config.tables.join(",")));
        } else {
            // Tables synced by snapshot or cursor are not streamed as well.
            let other: Vec<String> = crate::sync::schedule::scheduled(config)
                .iter()
                .map(|t| t.pattern().spelled())
                .collect();
            if !other.is_empty() {
                options.push(("exclude_tables".into(), other.join(",")));
            }
        }
        let decoder = Decoder::Fig {
            state: FigState::new(),
            types: TypeRegistry::builtin(),
        };
        return Ok((options, decoder));
    }
    // The copy takes generated columns exactly when the stream sends them.
    let publication = config.publication.clone().unwrap_or_default();
    match (config.include_generated, facts.publication_generated) {
        (true, false) => return Err(SourceError::GeneratedNotPublished { publication }.into()),
        (false, true) => return Err(SourceError::GeneratedPublished { publication }.into()),
        _ => {}
    }
    let proto = facts.pgoutput_proto();
    options.push(("proto_version".into(), proto.to_string()));
    options.push((
        "publication_names".into(),
        config.publication.clone().unwrap_or_default(),
    ));
    if proto >= 2 {
        options.push(("streaming".into(), "on".into()));
        // Logical messages (PostgreSQL 14+), delivered as figoutput's are.
        options.push(("messages".into(), "true".into()));
    }
    let state = PgState::from_options(options.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let types = load_types(&config.source).await?;
    Ok((options, Decoder::Pg { state, types }))
}

async fn load_types(conn: &crate::conn::ConnConfig) -> Result<TypeRegistry, RunError> {
    let client = conn.connect_sql().await.map_err(SourceError::from)?;
    crate::sync::catalog::load_types(&client)
        .await
        .map_err(|e| {
            SourceError::Query {
                transient: e.is_transient(),
                message: e.to_string(),
            }
            .into()
        })
}

/// Decodes one message; an unknown type (a type created after the registry was loaded, or, for
/// figoutput, the first type it needs from the catalog) reloads the registry and decodes the same
/// bytes again, once.
async fn decode_message(
    decoder: &mut Decoder,
    data: &[u8],
    conn: &crate::conn::ConnConfig,
) -> Result<Vec<Event>, RunError> {
    let mut reloaded = false;
    loop {
        let decoded = match decoder {
            Decoder::Fig { state, types } => decode::figoutput::decode(data, state, types),
            Decoder::Pg { state, types } => decode::pgoutput::decode(data, state, types),
        };
        match decoded {
            Err(e) if e.recovery() == Recovery::RefreshTypes && !reloaded => {
                warn!(error = %e, "reloading type information");
                *decoder.types_mut() = load_types(conn).await?;
                reloaded = true;
            }
            other => return Ok(other?),
        }
    }
}

impl From<DecodeError> for RunError {
    fn from(e: DecodeError) -> Self {
        RunError::Decode(e)
    }
}
