//! Configuration: one TOML file, the main settings also as flags, validated into [`Config`].
//!
//! ```toml
//! [source]
//! url = "postgres://fig@db.internal:5432/app"
//! password = "${FIG_PASSWORD}"          # or password_file = "/run/secrets/pg"
//! sslmode = "verify-full"               # the default; connection options may also be in the URL
//! sslrootcert = "/etc/fig/ca.pem"       # or "system"; sslcert, sslkey, channel_binding too
//! allow_password_auth = []              # ["md5"] accepts MD5 password authentication
//!
//! [replication]
//! slot = "fig"
//! publication = "fig"                   # pgoutput needs one; figoutput filters by it when set
//! plugin = "auto"                       # auto | figoutput | pgoutput
//! tables = ["public.*"]                 # figoutput include list (pgoutput: the publication decides)
//! create_slot = true
//! initial_copy = true                   # copy the tables under the new slot's snapshot first
//! status_interval_secs = 10
//!
//! [sink]
//! url = "sqlite:fig.sqlite"             # sqlite:PATH | jsonl:PATH | jsonl:-
//!
//! [pipeline]
//! spill_dir = "/var/tmp"                # large transactions beyond spill_mb go to disk
//! spill_mb = 64
//! batch_max_rows = 20000                # source transactions per sink transaction, bounded
//! batch_max_delay_ms = 0                # 0: write as soon as the sink is free (group commit)
//!
//! [metrics]
//! listen = "127.0.0.1:9187"             # Prometheus /metrics endpoint (see metrics.rs); unset: off
//! ```
//!
//! Flags win over the file. `${VAR}` in any string is replaced by the environment variable (an unset
//! variable is an error naming it); secrets never appear in logs. Every error names the key.

use crate::conn::ConnConfig;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// How long a committed transaction may wait for others to share its sink write while the sink is
/// idle. 0: written at once (group commit). While a write is in flight the next batch grows anyway,
/// so a busy stream gets large batches and a quiet one gets the lowest commit-to-durable latency.
pub const DEFAULT_BATCH_MAX_DELAY_MS: u64 = 0;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("config key `{key}`: {problem}")]
    Invalid { key: &'static str, problem: String },
    #[error("config key `{key}` is required (set it in the file or with {flag})")]
    Missing {
        key: &'static str,
        flag: &'static str,
    },
}

type Result<T> = std::result::Result<T, ConfigError>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub source: SourceSection,
    #[serde(default)]
    pub replication: ReplicationSection,
    #[serde(default)]
    pub sink: SinkSection,
    #[serde(default)]
    pub pipeline: PipelineSection,
    #[serde(default)]
    pub sync: SyncSection,
    /// Per-table sync modes (`[[tables]]`).
    #[serde(default)]
    pub tables: Vec<TableSection>,
    #[serde(default)]
    pub schema: SchemaSection,
    #[serde(default)]
    pub notify: NotifySection,
    #[serde(default)]
    pub metrics: MetricsSection,
    #[serde(default)]
    pub resync: ResyncSection,
}

/// Re-copies of streamed tables (`[resync]`, docs/SYNC.md "Resyncs").
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResyncSection {
    /// `run` re-copies a table that went out of sync by itself (default on).
    pub auto: Option<bool>,
    /// How often `run` compares the tables and partitions the slot streams with the sink's
    /// (default 60).
    pub scan_secs: Option<u64>,
}

/// The Prometheus endpoint (`[metrics]`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// `HOST:PORT` to serve `/metrics` on, e.g. `127.0.0.1:9187`; unset: no endpoint.
    pub listen: Option<String>,
}

/// What happens when a table's schema changes (see `drift.rs`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaSection {
    /// `continue` (default) or `pause`, for every table not listed in `tables`.
    pub on_change: Option<String>,
    /// Per table (`"schema.table" = "pause"`).
    #[serde(default)]
    pub tables: std::collections::BTreeMap<String, String>,
}

/// Where schema-change notifications go besides the log.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySection {
    /// An http:// or https:// URL that receives a JSON document per schema change (POST).
    pub webhook_url: Option<String>,
    pub webhook_timeout_ms: Option<u64>,
    pub webhook_attempts: Option<u32>,
    /// Extra headers, e.g. `{ Authorization = "Bearer ${HOOK_TOKEN}" }`.
    #[serde(default)]
    pub webhook_headers: std::collections::BTreeMap<String, String>,
    /// Send `webhook_headers` over plain http:// anyway (default: refused, they are often tokens).
    pub webhook_allow_http: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSection {
    /// Tables (or chunks of one table) copied at once.
    pub parallel: Option<u64>,
    /// The size of one CTID range of a large table, by the table's on-disk size.
    pub chunk_mb: Option<u64>,
    /// How often snapshot and incremental tables are synced by default (`30s`, `15m`, `1h`, `1d`).
    pub every: Option<String>,
    /// How long a copy waits for a table lock before it gives way and tries again (`5s`).
    pub lock_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSection {
    /// `schema.table`; a part holding a dot or a quote is written in double quotes (`"a.b"."x""y"`).
    pub name: Option<String>,
    /// `snapshot`, `incremental` or `cdc`.
    pub mode: Option<String>,
    /// incremental: the cursor column.
    pub cursor: Option<String>,
    /// incremental: how far back each pass re-reads, for transactions that commit late: a duration
    /// (`10m`) for time cursors, a number for integer cursors.
    pub lookback: Option<String>,
    /// snapshot and incremental: how often (default: `sync.every`, else hourly).
    pub every: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    pub url: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Connection options also accepted here (the same values as in the URL; a value set in both
    /// places must agree).
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
    pub channel_binding: Option<String>,
    pub allow_password_auth: Option<Vec<String>>,
}

impl SourceSection {
    /// The connection options of this section as (key, value), `${VAR}` replaced.
    fn connection_options(&self) -> Result<Vec<(&'static str, String)>> {
        let mut out = Vec::new();
        for (key, config_key, value) in [
            ("sslmode", "source.sslmode", &self.sslmode),
            ("sslrootcert", "source.sslrootcert", &self.sslrootcert),
            ("sslcert", "source.sslcert", &self.sslcert),
            ("sslkey", "source.sslkey", &self.sslkey),
            (
                "channel_binding",
                "source.channel_binding",
                &self.channel_binding,
            ),
        ] {
            if let Some(v) = value {
                out.push((key, interpolate(config_key, v)?));
            }
        }
        if let Some(list) = &self.allow_password_auth {
            if let Some(bad) = list.iter().find(|m| m.contains(',')) {
                return Err(ConfigError::Invalid {
                    key: "source.allow_password_auth",
                    problem: format!(
                        "{bad:?}: give one method per list item, e.g. [\"md5\", \"password\"]"
                    ),
                });
            }
            out.push(("allow_password_auth", list.join(",")));
        }
        Ok(out)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationSection {
    pub slot: Option<String>,
    pub publication: Option<String>,
    pub plugin: Option<String>,
    pub tables: Option<Vec<String>>,
    pub create_slot: Option<bool>,
    /// Copy the streamed tables under the new slot's exported snapshot before streaming (default on).
    pub initial_copy: Option<bool>,
    pub status_interval_secs: Option<u64>,
    /// Stream and copy stored generated columns too (default off).
    pub include_generated: Option<bool>,
    /// `root` (default): a partitioned table in one mirror named after its root; `leaf`: one per
    /// leaf partition.
    pub partition_mirrors: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSection {
    pub url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    pub spill_dir: Option<PathBuf>,
    pub spill_mb: Option<u64>,
    pub batch_max_rows: Option<u64>,
    pub batch_max_delay_ms: Option<u64>,
}

/// The settings that can also be given as flags.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub source: Option<String>,
    pub sink: Option<String>,
    pub slot: Option<String>,
    pub publication: Option<String>,
    pub tables: Option<String>,
    pub plugin: Option<String>,
    /// `--sync TABLE=MODE[:CURSOR]`, repeatable; added to the file's `[[tables]]`.
    pub sync: Vec<String>,
    /// `--accept-schema-change TABLE`, repeatable: a paused table's pending change is accepted.
    pub accept_schema_change: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginChoice {
    /// figoutput when the server has it and allows it, else pgoutput (the reason is logged).
    Auto,
    Figoutput,
    Pgoutput,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkTarget {
    Sqlite(PathBuf),
    /// `None`: standard output.
    Jsonl(Option<PathBuf>),
}

impl SinkTarget {
    pub fn parse(text: &str) -> std::result::Result<SinkTarget, String> {
        match text.split_once(':') {
            Some(("sqlite", path)) if !path.is_empty() => {
                Ok(SinkTarget::Sqlite(PathBuf::from(path)))
            }
            Some(("jsonl", "-")) => Ok(SinkTarget::Jsonl(None)),
            Some(("jsonl", path)) if !path.is_empty() => {
                Ok(SinkTarget::Jsonl(Some(PathBuf::from(path))))
            }
            _ => Err(format!(
                "{text:?} is not a sink; use sqlite:PATH, jsonl:PATH or jsonl:-"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub source: ConnConfig,
    pub slot: String,
    pub publication: Option<String>,
    pub plugin: PluginChoice,
    pub tables: Vec<String>,
    pub create_slot: bool,
    /// When the slot is created: copy the streamed tables first, under its exported snapshot.
    pub initial_copy: bool,
    pub status_interval: Duration,
    pub sink: SinkTarget,
    pub spill_dir: PathBuf,
    pub spill_bytes: usize,
    pub batch_max_rows: usize,
    pub batch_max_delay: Duration,
    /// Tables with an explicit sync mode, in the order given.
    pub syncs: Vec<TableSync>,
    pub sync_parallel: usize,
    pub sync_chunk_bytes: u64,
    /// The longest a copy session waits for a lock: past it the copy releases everything it holds
    /// and tries again under a new snapshot, so it never holds the application's DDL hostage.
    pub sync_lock_timeout: Duration,
    /// What a schema change that needs review does to its table.
    pub drift: crate::drift::Policy,
    pub webhook: Option<crate::notify::WebhookConfig>,
    /// Where `/metrics` is served, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `run` re-copies tables that went out of sync by itself.
    pub resync_auto: bool,
    /// `[resync] scan_secs`: how often `run` looks for streamed tables without a mirror and
    /// partitioned tables whose partitions changed.
    pub resync_scan: Duration,
    /// `[replication] include_generated`: stored generated columns are streamed (figoutput's
    /// option; pgoutput's publication must publish them) and copied.
    pub include_generated: bool,
    /// `[replication] partition_mirrors`: where a partitioned table's rows are mirrored.
    pub partition_mirrors: PartitionMirrors,
}

/// Where the rows of a partitioned table are mirrored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PartitionMirrors {
    /// One mirror named after the topmost partitioned table (`public.p`), each change's leaf
    /// partition recorded in the history.
    #[default]
    Root,
    /// One mirror per leaf partition, under its own name.
    Leaf,
}

/// How one table is kept in step with the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSync {
    pub schema: String,
    pub table: String,
    pub mode: SyncMode,
    /// How often a snapshot or incremental table is synced by `run`.
    pub every: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncMode {
    /// A full copy replacing the mirror atomically.
    Snapshot,
    /// Rows past the stored cursor, re-reading `lookback` before it.
    Incremental {
        cursor: String,
        lookback: Option<String>,
    },
    /// Logical replication, after an initial copy under the slot's exported snapshot.
    Cdc,
}

impl Config {
    /// Whether `run` streams a slot: some table is CDC (a `[[tables]]` entry with `mode = "cdc"`,
    /// `replication.tables`, or a publication), or no table has a mode at all (the plain CDC setup).
    /// A configuration of snapshot and incremental tables only runs their schedule, with no slot.
    pub fn streams(&self) -> bool {
        self.syncs.is_empty() || !self.tables.is_empty() || self.publication.is_some()
    }
}

impl TableSync {
    pub fn name(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    /// The table as an exact pattern (for figoutput's lists).
    pub fn pattern(&self) -> crate::ident::TableName {
        crate::ident::TableName {
            schema: crate::ident::Part::Exact(self.schema.clone()),
            table: crate::ident::Part::Exact(self.table.clone()),
        }
    }
}

/// The default schedule of snapshot and incremental tables.
pub const DEFAULT_SYNC_EVERY: Duration = Duration::from_secs(3600);

/// How long a copy waits for a lock by default: long enough for the application's short
/// transactions, short enough that DDL queued behind the copy is not kept waiting for long.
pub const DEFAULT_SYNC_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// Parses `30s`, `15m`, `1h`, `2d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; write e.g. 30s, 15m, 1h or 1d"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}; use s, m, h or d"
            ))
        }
    };
    Ok(Duration::from_secs(secs))
}

/// One table's name by SQL identifier rules (see [`crate::ident::TableName`]): unquoted parts
/// fold to lower case, quoted ones are exact. Returns (schema, table) as the catalog stores them.
pub fn parse_table_name(text: &str) -> std::result::Result<(String, String), String> {
    crate::ident::TableName::exact(text)
}

/// `schema.table` of two exact names, the way changes and mirrors name a table.
fn plain_name(text: &str) -> std::result::Result<String, String> {
    parse_table_name(text).map(|(s, t)| format!("{s}.{t}"))
}

fn table_sync(t: &TableSection, default_every: Duration) -> Result<TableSync> {
    let invalid = |key: &'static str, problem: String| ConfigError::Invalid { key, problem };
    let name = t.name.as_deref().ok_or(ConfigError::Missing {
        key: "tables.name",
        flag: "--sync TABLE=MODE",
    })?;
    let (schema, table) = parse_table_name(name).map_err(|p| invalid("tables.name", p))?;
    let mode = match t.mode.as_deref().unwrap_or("snapshot") {
        "snapshot" => SyncMode::Snapshot,
        "incremental" => SyncMode::Incremental {
            cursor: t.cursor.clone().ok_or_else(|| {
                invalid(
                    "tables.cursor",
                    format!("{name}: incremental mode needs a cursor column (an updated_at timestamp or a growing sequence)"),
                )
            })?,
            lookback: t.lookback.clone(),
        },
        "cdc" => SyncMode::Cdc,
        other => {
            return Err(invalid(
                "tables.mode",
                format!("{name}: {other:?} is not a mode; use snapshot, incremental or cdc"),
            ))
        }
    };
    if !matches!(mode, SyncMode::Incremental { .. }) && (t.cursor.is_some() || t.lookback.is_some())
    {
        return Err(invalid(
            "tables.cursor",
            format!("{name}: cursor and lookback apply to incremental mode only"),
        ));
    }
    let every = match &t.every {
        Some(e) => {
            parse_duration(e).map_err(|p| invalid("tables.every", format!("{name}: {p}")))?
        }
        None => default_every,
    };
    if every.is_zero() {
        return Err(invalid(
            "tables.every",
            format!("{name}: must be at least 1s"),
        ));
    }
    Ok(TableSync {
        schema,
        table,
        mode,
        every,
    })
}

/// The config key of a `[source]` connection option.
fn source_key(option: &str) -> &'static str {
    match option {
        "sslmode" => "source.sslmode",
        "sslrootcert" => "source.sslrootcert",
        "sslcert" => "source.sslcert",
        "sslkey" => "source.sslkey",
        "channel_binding" => "source.channel_binding",
        "allow_password_auth" => "source.allow_password_auth",
        _ => "source",
    }
}

/// `TABLE=MODE[:CURSOR]` as `--sync` gives it.
fn sync_flag(text: &str) -> Result<TableSection> {
    let (name, rest) = text.rsplit_once('=').ok_or_else(|| ConfigError::Invalid {
        key: "--sync",
        problem: format!(
            "{text:?} is not TABLE=MODE[:CURSOR] (e.g. public.orders=incremental:updated_at)"
        ),
    })?;
    let (mode, cursor) = match rest.split_once(':') {
        Some((m, c)) => (m, Some(c.to_string())),
        None => (rest, None),
    };
    Ok(TableSection {
        name: Some(name.to_string()),
        mode: Some(mode.to_string()),
        cursor,
        ..Default::default()
    })
}

impl Config {
    /// Reads the file (if any), applies the flags and validates everything.
    pub fn load(file: Option<&Path>, flags: &Overrides) -> Result<Config> {
        let parsed = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Toml {
                    path: path.to_path_buf(),
                    message: toml_problem(&e, &text),
                })?
            }
            None => FileConfig::default(),
        };
        Self::from_parts(parsed, flags)
    }

    pub fn from_parts(f: FileConfig, flags: &Overrides) -> Result<Config> {
        let url = pick(&flags.source, &f.source.url).ok_or(ConfigError::Missing {
            key: "source.url",
            flag: "--source",
        })?;
        let url = interpolate("source.url", &url)?;
        let options = f.source.connection_options()?;
        // Each `[source]` option alone first, so that a bad value is reported under its own key.
        for (key, value) in &options {
            ConnConfig::parse_with("user=x", &[(key, value.clone())]).map_err(|e| {
                ConfigError::Invalid {
                    key: source_key(key),
                    problem: e.to_string(),
                }
            })?;
        }
        let mut source =
            ConnConfig::parse_with(&url, &options).map_err(|e| ConfigError::Invalid {
                key: "source.url",
                problem: e.to_string(),
            })?;
        match (&f.source.password, &f.source.password_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "source.password",
                    problem: "give either password or password_file, not both".into(),
                })
            }
            (Some(p), None) => {
                source.password = Some(crate::conn::Password::new(interpolate(
                    "source.password",
                    p,
                )?))
            }
            (None, Some(path)) => {
                // libpq's rule for .pgpass: a password others can read is not a secret.
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path)
                    .map_err(|e| ConfigError::Invalid {
                        key: "source.password_file",
                        problem: format!("cannot read {}: {e}", path.display()),
                    })?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(ConfigError::Invalid {
                        key: "source.password_file",
                        problem: format!(
                            "{} can be read or written by group or others (mode {:o}): chmod 600 it (as libpq requires of .pgpass)",
                            path.display(),
                            mode & 0o777
                        ),
                    });
                }
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
                    key: "source.password_file",
                    problem: format!("cannot read {}: {e}", path.display()),
                })?;
                source.password = Some(crate::conn::Password::new(
                    text.trim_end_matches(['\n', '\r']).to_string(),
                ));
            }
            (None, None) => {}
        }

        let slot = pick(&flags.slot, &f.replication.slot).unwrap_or_else(|| "fig".to_string());
        crate::replication::commands::validate_slot_name(&slot).map_err(|e| {
            ConfigError::Invalid {
                key: "replication.slot",
                problem: e.to_string(),
            }
        })?;
        let publication = pick(&flags.publication, &f.replication.publication);
        let plugin = match pick(&flags.plugin, &f.replication.plugin)
            .as_deref()
            .unwrap_or("auto")
        {
            "auto" => PluginChoice::Auto,
            "figoutput" => PluginChoice::Figoutput,
            "pgoutput" => PluginChoice::Pgoutput,
            other => {
                return Err(ConfigError::Invalid {
                    key: "replication.plugin",
                    problem: format!("{other:?} is not a plugin; use auto, figoutput or pgoutput"),
                })
            }
        };
        if plugin == PluginChoice::Pgoutput && publication.is_none() {
            return Err(ConfigError::Missing {
                key: "replication.publication",
                flag: "--publication",
            });
        }
        let tables = match (&flags.tables, &f.replication.tables) {
            (Some(t), _) => t
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            (None, Some(t)) => t.clone(),
            (None, None) => Vec::new(),
        };
        // One spelling for every table pattern from here on: exact parts quoted, `*` bare.
        let tables = tables
            .iter()
            .map(|t| {
                crate::ident::TableName::pattern(t)
                    .map(|p| p.spelled())
                    .map_err(|problem| ConfigError::Invalid {
                        key: "replication.tables",
                        problem,
                    })
            })
            .collect::<Result<Vec<String>>>()?;
        let status_interval = Duration::from_secs(f.replication.status_interval_secs.unwrap_or(10));
        if status_interval.is_zero() || status_interval > Duration::from_secs(30) {
            return Err(ConfigError::Invalid {
                key: "replication.status_interval_secs",
                problem: "must be 1 to 30 seconds, well inside the server's wal_sender_timeout (60 s by default)".into(),
            });
        }
        let sink_text =
            pick(&flags.sink, &f.sink.url).unwrap_or_else(|| "sqlite:fig.sqlite".to_string());
        let sink = SinkTarget::parse(&interpolate("sink.url", &sink_text)?).map_err(|problem| {
            ConfigError::Invalid {
                key: "sink.url",
                problem,
            }
        })?;
        let spill_mb = f.pipeline.spill_mb.unwrap_or(64);
        if spill_mb == 0 {
            return Err(ConfigError::Invalid {
                key: "pipeline.spill_mb",
                problem: "must be at least 1".into(),
            });
        }
        let batch_max_rows = f.pipeline.batch_max_rows.unwrap_or(20_000);
        if batch_max_rows == 0 {
            return Err(ConfigError::Invalid {
                key: "pipeline.batch_max_rows",
                problem: "must be at least 1".into(),
            });
        }
        let default_every = match &f.sync.every {
            Some(e) => parse_duration(e).map_err(|problem| ConfigError::Invalid {
                key: "sync.every",
                problem,
            })?,
            None => DEFAULT_SYNC_EVERY,
        };
        let mut syncs: Vec<TableSync> = Vec::new();
        let flagged = flags
            .sync
            .iter()
            .map(|t| sync_flag(t))
            .collect::<Result<Vec<_>>>()?;
        for t in f.tables.iter().chain(&flagged) {
            let t = table_sync(t, default_every)?;
            if syncs
                .iter()
                .any(|s| (&s.schema, &s.table) == (&t.schema, &t.table))
            {
                return Err(ConfigError::Invalid {
                    key: "tables.name",
                    problem: format!("{} is listed twice", t.name()),
                });
            }
            syncs.push(t);
        }
        // CDC tables named one by one join the tables the slot streams.
        let mut tables = tables;
        for t in syncs.iter().filter(|t| t.mode == SyncMode::Cdc) {
            let name = t.pattern().spelled();
            if !tables.contains(&name) {
                tables.push(name);
            }
        }
        let sync_parallel = f.sync.parallel.unwrap_or(4);
        if sync_parallel == 0 || sync_parallel > 64 {
            return Err(ConfigError::Invalid {
                key: "sync.parallel",
                problem: "must be 1 to 64 (each is one connection to the source)".into(),
            });
        }
        let chunk_mb = f.sync.chunk_mb.unwrap_or(64);
        if chunk_mb == 0 {
            return Err(ConfigError::Invalid {
                key: "sync.chunk_mb",
                problem: "must be at least 1".into(),
            });
        }
        let sync_lock_timeout = match &f.sync.lock_timeout {
            Some(t) => parse_duration(t).map_err(|problem| ConfigError::Invalid {
                key: "sync.lock_timeout",
                problem,
            })?,
            None => DEFAULT_SYNC_LOCK_TIMEOUT,
        };
        // PostgreSQL reads a lock_timeout of 0 as "wait forever", which is what this key prevents.
        if sync_lock_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                key: "sync.lock_timeout",
                problem: "must be at least 1s (0 would wait for locks forever)".into(),
            });
        }
        let on_change = |key: &'static str, v: &str| match v {
            "continue" => Ok(crate::drift::OnChange::Continue),
            "pause" => Ok(crate::drift::OnChange::Pause),
            other => Err(ConfigError::Invalid {
                key,
                problem: format!("{other:?} is not a policy; use continue or pause"),
            }),
        };
        let mut drift = crate::drift::Policy {
            default: on_change(
                "schema.on_change",
                f.schema.on_change.as_deref().unwrap_or("continue"),
            )?,
            ..Default::default()
        };
        for (table, policy) in &f.schema.tables {
            let name = plain_name(table).map_err(|problem| ConfigError::Invalid {
                key: "schema.tables",
                problem,
            })?;
            drift
                .tables
                .push((name, on_change("schema.tables", policy)?));
        }
        for t in &flags.accept_schema_change {
            let name = plain_name(t).map_err(|problem| ConfigError::Invalid {
                key: "--accept-schema-change",
                problem,
            })?;
            drift.accepted.push(name);
        }
        let webhook = match &f.notify.webhook_url {
            None => None,
            Some(url) => {
                let url = interpolate("notify.webhook_url", url)?;
                if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
                    // Not echoed: a webhook URL often carries its token.
                    return Err(ConfigError::Invalid {
                        key: "notify.webhook_url",
                        problem: "is not an http:// or https:// URL".into(),
                    });
                }
                if url.starts_with("http://")
                    && !f.notify.webhook_headers.is_empty()
                    && f.notify.webhook_allow_http != Some(true)
                {
                    return Err(ConfigError::Invalid {
                        key: "notify.webhook_headers",
                        problem: "would be sent in clear over http:// (headers such as Authorization are secrets): use an https:// webhook_url, or set notify.webhook_allow_http = true".into(),
                    });
                }
                let mut headers = Vec::new();
                for (k, v) in &f.notify.webhook_headers {
                    headers.push((k.clone(), interpolate("notify.webhook_headers", v)?));
                }
                let attempts = f.notify.webhook_attempts.unwrap_or(8);
                if attempts == 0 {
                    return Err(ConfigError::Invalid {
                        key: "notify.webhook_attempts",
                        problem: "must be at least 1".into(),
                    });
                }
                Some(crate::notify::WebhookConfig {
                    url,
                    timeout: Duration::from_millis(f.notify.webhook_timeout_ms.unwrap_or(10_000)),
                    attempts,
                    headers,
                })
            }
        };
        let metrics_listen = match &f.metrics.listen {
            None => None,
            Some(text) => {
                let text = interpolate("metrics.listen", text)?;
                Some(text.parse().map_err(|_| ConfigError::Invalid {
                    key: "metrics.listen",
                    problem: format!(
                        "{text:?} is not HOST:PORT with a numeric host, e.g. 127.0.0.1:9187"
                    ),
                })?)
            }
        };
        Ok(Config {
            drift,
            webhook,
            metrics_listen,
            resync_auto: f.resync.auto.unwrap_or(true),
            resync_scan: match f.resync.scan_secs.unwrap_or(60) {
                0 => {
                    return Err(ConfigError::Invalid {
                        key: "resync.scan_secs",
                        problem: "must be at least 1".into(),
                    })
                }
                n => Duration::from_secs(n),
            },
            include_generated: f.replication.include_generated.unwrap_or(false),
            partition_mirrors: match f.replication.partition_mirrors.as_deref() {
                None | Some("root") => PartitionMirrors::Root,
                Some("leaf") => PartitionMirrors::Leaf,
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        key: "replication.partition_mirrors",
                        problem: format!("{other:?} is not a choice; use root or leaf"),
                    })
                }
            },
            syncs,
            sync_parallel: sync_parallel as usize,
            sync_chunk_bytes: chunk_mb << 20,
            sync_lock_timeout,
            source,
            slot,
            publication,
            plugin,
            tables,
            create_slot: f.replication.create_slot.unwrap_or(true),
            initial_copy: f.replication.initial_copy.unwrap_or(true),
            status_interval,
            sink,
            spill_dir: f.pipeline.spill_dir.unwrap_or_else(std::env::temp_dir),
            spill_bytes: (spill_mb as usize).saturating_mul(1 << 20),
            batch_max_rows: batch_max_rows as usize,
            batch_max_delay: Duration::from_millis(
                f.pipeline
                    .batch_max_delay_ms
                    .unwrap_or(DEFAULT_BATCH_MAX_DELAY_MS),
            ),
        })
    }
}

fn pick(flag: &Option<String>, file: &Option<String>) -> Option<String> {
    flag.clone().or_else(|| file.clone())
}

/// Replaces `${VAR}` with the environment variable's value.
pub fn interpolate(key: &'static str, text: &str) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| ConfigError::Invalid {
            key,
            problem: "unterminated ${...}".into(),
        })?;
        let var = &after[..end];
        let value = std::env::var(var).map_err(|_| ConfigError::Invalid {
            key,
            problem: format!("environment variable {var} is not set"),
        })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Where a TOML error is and what it is, without the file's text: toml's own rendering quotes the
/// offending line, and that line may hold a password (a misspelled key, an unquoted value).
fn toml_problem(e: &toml::de::Error, text: &str) -> String {
    let at = e.span().map(|span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!("line {line}, column {column}: ")
    });
    format!("{}{}", at.unwrap_or_default(), e.message().trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str, flags: Overrides) -> Result<Config> {
        let f: FileConfig = toml::from_str(toml_text).map_err(|e| ConfigError::Toml {
            path: "t.toml".into(),
            message: toml_problem(&e, toml_text),
        })?;
        Config::from_parts(f, &flags)
    }

    #[test]
    fn source_connection_keys_combine_with_the_url_and_errors_name_them() {
        use crate::conn::{ChannelBinding, PasswordAuth, SslMode, SslRootCert};
        let c = parse(
            "[source]\nurl = \"postgres://a@h/db\"\nsslmode = \"verify-ca\"\nsslrootcert = \"/etc/ca.pem\"\nsslcert = \"/c.crt\"\nsslkey = \"/c.key\"\nchannel_binding = \"require\"\nallow_password_auth = [\"md5\"]",
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.source.ssl_mode, SslMode::VerifyCa);
        assert_eq!(
            c.source.ssl_root_cert,
            Some(SslRootCert::File("/etc/ca.pem".into()))
        );
        assert_eq!(c.source.channel_binding, ChannelBinding::Require);
        assert!(c.source.allow_password_auth.allows(PasswordAuth::Md5));
        assert!(!c.source.allow_password_auth.allows(PasswordAuth::Cleartext));
        // The default is verify-full.
        let c = parse(
            "[source]\nurl = \"postgres://a@h/db\"",
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.source.ssl_mode, SslMode::VerifyFull);
        for (body, key) in [
            ("sslmode = \"sometimes\"", "source.sslmode"),
            ("channel_binding = \"always\"", "source.channel_binding"),
            (
                "allow_password_auth = [\"scram\"]",
                "source.allow_password_auth",
            ),
            (
                "allow_password_auth = [\"md5,password\"]",
                "source.allow_password_auth",
            ),
        ] {
            let e = parse(
                &format!("[source]\nurl = \"postgres://a@h/db\"\n{body}"),
                Overrides::default(),
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains(key), "{body}: {e}");
        }
        // The URL and [source] disagreeing: refused, naming the option.
        let e = parse(
            "[source]\nurl = \"postgres://a@h/db?sslmode=disable\"\nsslmode = \"verify-full\"",
            Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`sslmode`") && e.contains("[source]"), "{e}");
    }

    #[test]
    fn flags_win_over_the_file() {
        let c = parse(
            "[source]\nurl = \"postgres://a@h/db\"\n[replication]\nslot = \"s1\"\n[sink]\nurl = \"jsonl:-\"",
            Overrides { slot: Some("s2".into()), sink: Some("sqlite:/tmp/x.sqlite".into()), ..Default::default() },
        )
        .unwrap();
        assert_eq!(c.slot, "s2");
        assert_eq!(c.sink, SinkTarget::Sqlite("/tmp/x.sqlite".into()));
        assert_eq!(c.plugin, PluginChoice::Auto);
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&str, Overrides, &str)] = &[
            ("", Overrides::default(), "source.url"),
            ("[source]\nurl = \"postgres://a@h/db\"\n[replication]\nplugin = \"wal2json\"", Overrides::default(), "replication.plugin"),
            ("[source]\nurl = \"postgres://a@h/db\"\n[sink]\nurl = \"kafka:x\"", Overrides::default(), "sink.url"),
            ("[source]\nurl = \"postgres://a@h/db\"\n[replication]\nslot = \"Bad-Name\"", Overrides::default(), "replication.slot"),
            ("[source]\nurl = \"postgres://a@h/db\"\n[replication]\nplugin = \"pgoutput\"", Overrides::default(), "replication.publication"),
            ("[source]\nurl = \"postgres://a@h/db\"\n[replication]\nstatus_interval_secs = 90", Overrides::default(), "replication.status_interval_secs"),
            ("[source]\nurl = \"postgres://a@h/db?colour=blue\"", Overrides::default(), "source.url"),
            ("[source]\nurl = \"postgres://a@h/db\"\npassword = \"${FIG_TEST_SURELY_UNSET_VAR}\"", Overrides::default(), "FIG_TEST_SURELY_UNSET_VAR"),
            ("[source]\nurl = \"postgres://a@h/db\"\n[schema]\non_change = \"stop\"", Overrides::default(), "schema.on_change"),
            ("[source]\nurl = \"postgres://a@h/db\"\n[schema.tables]\n\"public.t\" = \"halt\"", Overrides::default(), "schema.tables"),
            ("[source]\nurl = \"postgres://a@h/db\"\n[notify]\nwebhook_url = \"ftp://x\"", Overrides::default(), "notify.webhook_url"),
            ("[source]\nurl = \"postgres://a@h/db\"\n[notify]\nwebhook_url = \"http://hooks.example/x\"\nwebhook_headers = { Authorization = \"Bearer t\" }", Overrides::default(), "notify.webhook_headers"),
            ("[source]\nurl = \"postgres://a@h/db\"\n[[tables]]\nname = \"public.t\"\nmode = \"incremental\"", Overrides::default(), "tables.cursor"),
            ("[source]\nurl = \"postgres://a@h/db\"\n[[tables]]\nname = \"nodot\"", Overrides::default(), "tables.name"),
            ("[source]\nurl = \"postgres://a@h/db\"\n[[tables]]\nname = \"public.t\"\nevery = \"5 parsecs\"", Overrides::default(), "tables.every"),
            ("[source]\nurl = \"postgres://a@h/db\"\n[sync]\nparallel = 0", Overrides::default(), "sync.parallel"),
            ("[source]\nurl = \"postgres://a@h/db\"\n[sync]\nlock_timeout = \"0s\"", Overrides::default(), "sync.lock_timeout"),
            ("[source]\nurl = \"postgres://a@h/db\"\n[sync]\nlock_timeout = \"soon\"", Overrides::default(), "sync.lock_timeout"),
            ("[source]\nurl = \"postgres://a@h/db\"\n[metrics]\nlisten = \"localhost\"", Overrides::default(), "metrics.listen"),
        ];
        for (text, flags, needle) in cases {
            let e = parse(text, flags.clone()).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_copy_lock_timeout_is_a_duration_with_a_default() {
        let url = "[source]\nurl = \"postgres://a@h/db\"";
        let c = parse(url, Overrides::default()).unwrap();
        assert_eq!(c.sync_lock_timeout, DEFAULT_SYNC_LOCK_TIMEOUT);
        let c = parse(
            &format!("{url}\n[sync]\nlock_timeout = \"2m\""),
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.sync_lock_timeout, Duration::from_secs(120));
    }

    #[test]
    fn a_password_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "Pw-SECRET\n").unwrap();
        let cfg = format!(
            "[source]\nurl = \"postgres://a@h/db\"\npassword_file = \"{}\"",
            file.display()
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = parse(&cfg, Overrides::default()).unwrap_err().to_string();
        assert!(
            e.contains("source.password_file") && e.contains("644") && e.contains("chmod 600"),
            "{e}"
        );
        assert!(!e.contains("Pw-SECRET"), "{e}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = parse(&cfg, Overrides::default()).unwrap();
        assert_eq!(c.source.password.as_ref().unwrap().expose(), "Pw-SECRET");
    }

    #[test]
    fn toml_errors_say_where_and_what_but_never_quote_the_file() {
        for text in [
            "[source]\nurl = \"postgres://a@h/db\"\npasword = \"TopSecret-42\"",
            "[source]\nurl = \"postgres://a@h/db\"\npassword = TopSecret-42",
            "[source]\npassword = \"TopSecret-42",
        ] {
            let e = parse(text, Overrides::default()).unwrap_err().to_string();
            assert!(!e.contains("TopSecret"), "{e}");
            assert!(e.contains("line 3") || e.contains("line 2"), "{e}");
        }
        let e = parse("[source]\npasword = \"x\"", Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2, column 1") && e.contains("pasword"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let e = toml::from_str::<FileConfig>("[source]\nurll = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("urll"), "{e}");
    }

    #[test]
    fn secrets_come_from_the_environment_and_never_print() {
        std::env::set_var("FIG_TEST_PASSWORD_X", "s3cret");
        let c = parse(
            "[source]\nurl = \"postgres://a@h/db\"\npassword = \"${FIG_TEST_PASSWORD_X}\"",
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.source.password.as_ref().unwrap().expose(), "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
