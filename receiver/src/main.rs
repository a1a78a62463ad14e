//! The `fig-receiver` command line: wiring only. Everything it does lives in the library.

use clap::{Args, Parser, Subcommand};
use fig_receiver::config::{Config, Overrides};
use fig_receiver::run::{self, source::SourceFacts, source::Start, EndPos};
use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "fig-receiver",
    version,
    about = "PostgreSQL change data capture into a durable sink"
)]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Stream the slot into the sink (until --endpos, or Ctrl-C / SIGTERM).
    Run {
        #[command(flatten)]
        common: Common,
        /// Stop once every change up to this LSN (X/Y), or the server's position at start (`now`), is durable.
        #[arg(long)]
        endpos: Option<EndPos>,
    },
    /// Check the configuration and the source: connection, plugin choice, slot, publication, resume point.
    Check {
        #[command(flatten)]
        common: Common,
    },
    /// Sync the snapshot and incremental tables once, then exit.
    Snapshot {
        #[command(flatten)]
        common: Common,
    },
    /// Show the sink's checkpoint and the slot's position.
    Status {
        #[command(flatten)]
        common: Common,
    },
    /// Re-copy streamed tables into the sink while the stream goes on, then exit once they are in
    /// sync (a receiver streaming the slot carries the sink there; without one, this streams).
    Resync {
        #[command(flatten)]
        common: Common,
        /// The tables: schema.table (quote a part holding a dot or a quote: "a.b"."x""y").
        #[arg(required = true, value_name = "TABLE")]
        names: Vec<String>,
    },
}

#[derive(Args)]
struct Common {
    /// TOML configuration file.
    #[arg(long, env = "FIG_CONFIG", hide_env_values = true)]
    config: Option<PathBuf>,
    /// Source connection URL (postgres://user@host:port/db?sslmode=...).
    // The value often holds a password: `--help` names the variable, never its value.
    #[arg(long, env = "FIG_SOURCE", hide_env_values = true)]
    source: Option<String>,
    /// Sink: sqlite:PATH, jsonl:PATH or jsonl:- (stdout).
    #[arg(long)]
    sink: Option<String>,
    /// Replication slot name.
    #[arg(long)]
    slot: Option<String>,
    /// Publication (required for pgoutput; a filter for figoutput).
    #[arg(long)]
    publication: Option<String>,
    /// Tables to capture with figoutput: schema.table patterns, comma-separated.
    #[arg(long)]
    tables: Option<String>,
    /// auto (default), figoutput or pgoutput.
    #[arg(long)]
    plugin: Option<String>,
    /// A table's sync mode: TABLE=snapshot, TABLE=incremental:CURSOR_COLUMN or TABLE=cdc (repeatable).
    #[arg(long, value_name = "TABLE=MODE[:CURSOR]")]
    sync: Vec<String>,
    /// Accept the pending schema change of a table paused by `schema.on_change = "pause"` (repeatable).
    #[arg(long, value_name = "TABLE")]
    accept_schema_change: Vec<String>,
}

impl Common {
    /// The validated config; each risk its connection settings take is logged as a warning, at every
    /// start (weak sslmode, password methods weaker than SCRAM).
    fn load(&self) -> Result<Config, fig_receiver::config::ConfigError> {
        let config = self.load_quietly()?;
        for risk in fig_receiver::conn::security_warnings(&config.source) {
            tracing::warn!("{risk}");
        }
        Ok(config)
    }

    fn load_quietly(&self) -> Result<Config, fig_receiver::config::ConfigError> {
        Config::load(
            self.config.as_deref(),
            &Overrides {
                source: self.source.clone(),
                sink: self.sink.clone(),
                slot: self.slot.clone(),
                publication: self.publication.clone(),
                tables: self.tables.clone(),
                plugin: self.plugin.clone(),
                sync: self.sync.clone(),
                accept_schema_change: self.accept_schema_change.clone(),
            },
        )
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fig-receiver: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run { common, endpos } => cmd_run(common.load()?, endpos).await,
            Command::Check { common } => cmd_check(common.load()?).await,
            Command::Snapshot { common } => cmd_snapshot(common.load()?).await,
            Command::Status { common } => cmd_status(common.load()?).await,
            Command::Resync { common, names } => cmd_resync(common.load()?, names).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fig-receiver: {e}");
            ExitCode::FAILURE
        }
    }
}

type AnyError = Box<dyn std::error::Error + Send + Sync>;

async fn cmd_run(config: Config, endpos: Option<EndPos>) -> Result<(), AnyError> {
    if let Some(addr) = config.metrics_listen {
        fig_receiver::metrics::serve(addr)?;
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        let _ = tx.send(true);
    });
    let summary = run::run(&config, endpos, rx).await?;
    eprintln!(
        "fig-receiver: {} transactions, {} rows delivered in {:.1} s{}",
        summary.transactions,
        summary.rows,
        summary.seconds,
        summary
            .durable
            .map(|l| format!("; durable up to {l}"))
            .unwrap_or_default()
    );
    Ok(())
}

async fn cmd_snapshot(config: Config) -> Result<(), AnyError> {
    if let Some(addr) = config.metrics_listen {
        fig_receiver::metrics::serve(addr)?;
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        let _ = tx.send(true);
    });
    // A JSON Lines file takes one writer (a SQLite file serializes its writers itself).
    let _writer = match &config.sink {
        fig_receiver::config::SinkTarget::Jsonl(Some(p)) => {
            fig_receiver::sink::lock::WriterLock::acquire(p)?
        }
        _ => None,
    };
    let summary = fig_receiver::sync::snapshot_pass(&config, rx).await?;
    eprintln!(
        "fig-receiver: {} tables, {} rows synced in {:.1} s",
        summary.tables, summary.rows, summary.seconds
    );
    Ok(())
}

async fn cmd_resync(config: Config, names: Vec<String>) -> Result<(), AnyError> {
    let mut tables = Vec::with_capacity(names.len());
    for n in &names {
        tables.push(
            fig_receiver::config::parse_table_name(n)
                .map_err(|problem| format!("table {n:?}: {problem}"))?,
        );
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        let _ = tx.send(true);
    });
    let summary = run::resync::command(&config, &tables, rx).await?;
    eprintln!(
        "fig-receiver: {} tables re-copied and in sync ({} rows) in {:.1} s",
        summary.tables, summary.rows, summary.seconds
    );
    Ok(())
}

async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn cmd_check(config: Config) -> Result<(), AnyError> {
    println!("source:      {}", config.source.redacted());
    let facts =
        SourceFacts::read(&config.source, &config.slot, config.publication.as_deref()).await?;
    println!("server:      PostgreSQL {}", facts.server_version_num);
    let (plugin, why) = run::source::choose_plugin(config.plugin, &facts, &config.slot)?;
    println!("plugin:      {plugin} ({why})");
    match &facts.slot {
        Some(s) => println!(
            "slot:        {} exists, plugin {}, confirmed up to {}",
            config.slot,
            s.plugin,
            s.confirmed_flush
                .map(|l| l.to_string())
                .unwrap_or_else(|| "-".into())
        ),
        None => println!(
            "slot:        {} does not exist (run creates it)",
            config.slot
        ),
    }
    if let (Some(p), Some(exists)) = (&config.publication, facts.publication_exists) {
        println!(
            "publication: {p} {}",
            if exists { "exists" } else { "DOES NOT EXIST" }
        );
    }
    let mut repl = fig_receiver::replication::ReplicationClient::connect(&config.source).await?;
    let system = repl.identify_system().await?;
    println!(
        "replication: connected, system {} timeline {}, WAL at {}",
        system.systemid, system.timeline, system.xlogpos
    );
    // Read-only: a live receiver may be writing this sink; a missing one is not created.
    let sink = fig_receiver::sink::open::inspect(&config.sink)?;
    if !sink.exists {
        println!("sink:        {}", missing_sink(&config.sink));
    }
    let (checkpoint, initial) = (sink.checkpoint, sink.initial_copy);
    let resumed = run::source::resume_point(
        checkpoint.as_ref(),
        &facts,
        (system.systemid, system.timeline),
        &config.slot,
        &plugin,
        initial,
    );
    if let Err(run::source::SourceError::SlotWithoutCheckpoint { .. }) = &resumed {
        if run::source::own_orphan_slot(&facts, &config.slot, sink.slot_intent.as_deref()) {
            println!("resume:      the slot was created by this sink's previous run, which ended before its copy began: it will be dropped and created again");
            let _ = repl.close().await;
            println!("check passed");
            return Ok(());
        }
    }
    match resumed {
        Ok(Start::Resume(lsn)) => println!("resume:      from {lsn}"),
        Ok(Start::CreateSlot) => println!(
            "resume:      new sink: the slot will be created{} and streamed from its start",
            if config.initial_copy {
                ", the tables copied under its snapshot,"
            } else {
                ""
            }
        ),
        Ok(Start::FinishInitialCopy(lsn)) => {
            println!("resume:      the initial copy begun at {lsn} will be finished, then streamed from there")
        }
        Err(e) => return Err(e.into()),
    }
    let _ = repl.close().await;
    println!("check passed");
    Ok(())
}

async fn cmd_status(config: Config) -> Result<(), AnyError> {
    // Read-only: a live receiver may be writing this sink.
    let sink = fig_receiver::sink::open::inspect(&config.sink)?;
    if !sink.exists {
        println!("sink: {}", missing_sink(&config.sink));
    }
    match sink.checkpoint {
        Some(c) => println!(
            "sink checkpoint: durable up to {} (slot {}, plugin {}, system {}, timeline {})",
            c.commit_end_lsn, c.slot, c.plugin, c.system_id, c.timeline
        ),
        None => println!("sink checkpoint: none (nothing delivered yet)"),
    }
    if let (fig_receiver::config::SinkTarget::Sqlite(path), true) = (&config.sink, sink.exists) {
        let states = fig_receiver::sink::sqlite::states_of_file(path)?;
        if states.is_empty() {
            println!("tables: every mirror in sync");
        }
        for t in states {
            println!(
                "table {}: {} since {} (change #{}, marked {}): {}",
                t.name(),
                t.state.replace('_', " "),
                t.since,
                t.since_ordinal,
                t.marked_at,
                t.reason
            );
        }
    }
    let facts = SourceFacts::read(&config.source, &config.slot, None).await?;
    match facts.slot {
        Some(s) => println!(
            "slot {}: plugin {}, confirmed up to {}",
            config.slot,
            s.plugin,
            s.confirmed_flush
                .map(|l| l.to_string())
                .unwrap_or_else(|| "-".into())
        ),
        None => println!("slot {}: does not exist", config.slot),
    }
    Ok(())
}

/// Why a sink has nothing to inspect.
fn missing_sink(target: &fig_receiver::config::SinkTarget) -> String {
    use fig_receiver::config::SinkTarget;
    match target {
        SinkTarget::Sqlite(p) | SinkTarget::Jsonl(Some(p)) => format!(
            "no file at {} (nothing delivered yet, or a wrong path; run creates it)",
            p.display()
        ),
        SinkTarget::Jsonl(None) => "standard output keeps no checkpoint".into(),
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
