//! Where sinks are built: the one place that turns a configured target into a sink, for every
//! command (`run`, `snapshot`, `resync`), and the read-only inspection `status` and `check` use.
//!
//! ```text
//! config.sink ─▶ open (writes; follows schema drift) ─▶ Box<dyn Sink>
//!             ─▶ open_for_stream (run's writer: a JSON Lines file also takes re-copies)
//!             ─▶ inspect (reads only: never creates, truncates or locks)
//! ```

use std::sync::Arc;

use super::jsonl::{self, Gate, JsonlSink};
use super::{Checkpoint, Sink, SinkError, SqliteSink};
use crate::config::{Config, SinkTarget};
use crate::drift::Watch;
use crate::model::Lsn;

/// The drift policy and notifier of `config`, for the sinks a command opens.
pub fn drift_watch(config: &Config) -> Arc<Watch> {
    Arc::new(Watch {
        policy: config.drift.clone(),
        notifier: crate::notify::Notifier::new(config.webhook.clone()),
    })
}

/// Opens the sink of `config` for writing, following schema drift with `watch`.
pub fn open(config: &Config, watch: Arc<Watch>) -> Result<Box<dyn Sink>, SinkError> {
    let mut sink = open_target(&config.sink)?;
    sink.watch_drift(watch);
    Ok(sink)
}

/// Opens the sink a stream writes, following schema drift with `watch`: a JSON Lines file also
/// follows `recopies` (puts re-copies in at their positions, see [`jsonl::Gate`]).
pub fn open_for_stream(
    target: &SinkTarget,
    watch: Arc<Watch>,
    recopies: Option<&Arc<Gate>>,
) -> Result<Box<dyn Sink>, SinkError> {
    let mut sink: Box<dyn Sink> = match (target, recopies) {
        (SinkTarget::Jsonl(Some(path)), Some(gate)) => {
            let mut sink = JsonlSink::open_file(path)?;
            sink.follow_recopies(Arc::clone(gate));
            Box::new(sink)
        }
        _ => open_target(target)?,
    };
    sink.watch_drift(watch);
    Ok(sink)
}

fn open_target(target: &SinkTarget) -> Result<Box<dyn Sink>, SinkError> {
    Ok(match target {
        SinkTarget::Sqlite(path) => Box::new(SqliteSink::open(path)?),
        SinkTarget::Jsonl(None) => Box::new(JsonlSink::open("-")?),
        SinkTarget::Jsonl(Some(path)) => Box::new(JsonlSink::open_file(path)?),
    })
}

/// What a sink holds, read without writing or creating anything, so `status` and `check` are safe
/// beside a live receiver and with a mistyped path.
#[derive(Debug, Default)]
pub struct Inspection {
    /// `false`: no sink file at that path (nothing delivered yet, or a wrong path).
    pub exists: bool,
    pub checkpoint: Option<Checkpoint>,
    /// The stream position of the latest initial copy (SQLite; JSON Lines keeps none).
    pub initial_copy: Option<Lsn>,
    /// The slot the sink recorded it was about to create (SQLite).
    pub slot_intent: Option<String>,
}

pub fn inspect(target: &SinkTarget) -> Result<Inspection, SinkError> {
    let path = match target {
        SinkTarget::Sqlite(p) | SinkTarget::Jsonl(Some(p)) => p,
        SinkTarget::Jsonl(None) => return Ok(Inspection::default()),
    };
    if !path.exists() {
        return Ok(Inspection::default());
    }
    Ok(match target {
        SinkTarget::Sqlite(p) => {
            let f = super::sqlite::inspect_file(p)?;
            Inspection {
                exists: true,
                checkpoint: f.checkpoint,
                initial_copy: f.initial_copy,
                slot_intent: f.slot_intent,
            }
        }
        _ => Inspection {
            exists: true,
            checkpoint: jsonl::checkpoint_of_file(path)?,
            ..Inspection::default()
        },
    })
}
