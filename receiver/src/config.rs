//! Configuration: one TOML file, the main settings also as flags, validated into [`Config`].
//!
//! ```toml
//! [source]
//! url = "postgres://fig@db.internal:5432/app?sslmode=prefer"
//! password = "${FIG_PASSWORD}"          # or password_file = "/run/secrets/pg"
//!
//! [replication]
//! slot = "fig"
//! publication = "fig"                   # pgoutput needs one; figoutput filters by it when set
//! plugin = "auto"                       # auto | figoutput | pgoutput
//! tables = ["public.*"]                 # figoutput include list (pgoutput: the publication decides)
//! create_slot = true
//! status_interval_secs = 10
//!
//! [sink]
//! url = "sqlite:fig.sqlite"             # sqlite:PATH | jsonl:PATH | jsonl:-
//!
//! [pipeline]
//! spill_dir = "/var/tmp"                # large transactions beyond spill_mb go to disk
//! spill_mb = 64
//! batch_max_rows = 20000                # source transactions per sink transaction, bounded
//! batch_max_delay_ms = 20
//! ```
//!
//! Flags win over the file. `${VAR}` in any string is replaced by the environment variable (an unset
//! variable is an error naming it); secrets never appear in logs. Every error names the key.

use crate::conn::ConnConfig;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// How long a committed transaction may wait for others to share its sink write. Short enough that
/// commit-to-durable latency stays well under 100 ms at steady rates; busy streams fill batches by
/// rows long before.
pub const DEFAULT_BATCH_MAX_DELAY_MS: u64 = 20;

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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    pub url: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationSection {
    pub slot: Option<String>,
    pub publication: Option<String>,
    pub plugin: Option<String>,
    pub tables: Option<Vec<String>>,
    pub create_slot: Option<bool>,
    pub status_interval_secs: Option<u64>,
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
    pub status_interval: Duration,
    pub sink: SinkTarget,
    pub spill_dir: PathBuf,
    pub spill_bytes: usize,
    pub batch_max_rows: usize,
    pub batch_max_delay: Duration,
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
                    message: e.to_string(),
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
        let mut source = ConnConfig::parse(&url).map_err(|e| ConfigError::Invalid {
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
        for t in &tables {
            if !t.contains('.') {
                return Err(ConfigError::Invalid {
                    key: "replication.tables",
                    problem: format!("{t:?} must be schema.table (either part may be *)"),
                });
            }
        }
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
        Ok(Config {
            source,
            slot,
            publication,
            plugin,
            tables,
            create_slot: f.replication.create_slot.unwrap_or(true),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str, flags: Overrides) -> Result<Config> {
        let f: FileConfig = toml::from_str(toml_text).map_err(|e| ConfigError::Toml {
            path: "t.toml".into(),
            message: e.to_string(),
        })?;
        Config::from_parts(f, &flags)
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
        ];
        for (text, flags, needle) in cases {
            let e = parse(text, flags.clone()).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
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
