//! The settings the harness gives every cluster, written to `$PGDATA/fig_harness.conf` and included
//! at the end of `postgresql.conf`. A file rather than `-c` flags, so a developer can start a
//! leftover data dir by hand (`postgres -D …`) and get the same server; `ALTER SYSTEM` still wins,
//! since `postgresql.auto.conf` is read after `postgresql.conf`.

use std::path::Path;

use crate::error::HarnessError;

pub(crate) const FILE_NAME: &str = "fig_harness.conf";

/// Output plugins that every test cluster may load: the built-in ones, ours, and wal2json as a
/// comparison baseline. Only written for servers that know the setting (15.19+, 17.11+, 18.6+).
pub(crate) const OUTPUT_PLUGIN_LIBRARIES: &str = "pgoutput, test_decoding, figoutput, wal2json";

#[derive(Debug, Clone)]
pub(crate) struct ServerConfig<'a> {
    pub port: u16,
    pub socket_dir: &'a Path,
    pub knows_output_plugin_libraries: bool,
    /// Caller's settings, written last so they override the harness's.
    pub extra: &'a [(String, String)],
}

impl ServerConfig<'_> {
    pub(crate) fn render(&self) -> String {
        let mut settings: Vec<(&str, String)> = vec![
            // TCP on loopback only (tests may only talk to 127.0.0.0/8), plus the cluster's own
            // socket dir so parallel clusters never share a lock file.
            ("listen_addresses", "127.0.0.1".into()),
            ("port", self.port.to_string()),
            (
                "unix_socket_directories",
                self.socket_dir.to_string_lossy().into_owned(),
            ),
            ("wal_level", "logical".into()),
            // Room for tests that each create several slots and streams.
            ("max_replication_slots", "32".into()),
            ("max_wal_senders", "32".into()),
            // fsync only protects against an OS crash or power loss, which would end the test run
            // anyway; a server crash (kill -9, immediate stop) loses nothing without it because the
            // WAL is in the OS page cache. Off, parallel clusters don't wait on each other's flushes.
            ("fsync", "off".into()),
            // Log to stderr, which the harness sends to server.log; messages in English because the
            // harness reads them (a port clash is recognised by its message).
            ("logging_collector", "off".into()),
            ("log_destination", "stderr".into()),
            ("lc_messages", "C".into()),
        ];
        if self.knows_output_plugin_libraries {
            settings.push(("output_plugin_libraries", OUTPUT_PLUGIN_LIBRARIES.into()));
        }
        let mut text = String::from(
            "# Written by fig-tests' harness on every start; edits are overwritten.\n",
        );
        for (name, value) in settings
            .iter()
            .map(|(n, v)| (*n, v.as_str()))
            .chain(self.extra.iter().map(|(n, v)| (n.as_str(), v.as_str())))
        {
            text.push_str(&format!("{name} = {}\n", quote(value)));
        }
        text
    }
}

/// Checks a setting name before it goes into postgresql.conf, where a stray newline or `=` would
/// make a different file than the caller meant.
pub(crate) fn validate_name(name: &str) -> Result<(), HarnessError> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if valid {
        Ok(())
    } else {
        Err(HarnessError::InvalidSetting {
            name: name.to_owned(),
        })
    }
}

/// A postgresql.conf value as a quoted string, which the server accepts for settings of every type.
/// A list setting such as output_plugin_libraries is split at the commas inside the quotes.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_settings_come_last_and_values_are_quoted() {
        let extra = vec![
            ("logical_decoding_work_mem".to_owned(), "64kB".to_owned()),
            ("x.y".into(), "it's".into()),
        ];
        let text = ServerConfig {
            port: 5555,
            socket_dir: Path::new("/tmp/c"),
            knows_output_plugin_libraries: true,
            extra: &extra,
        }
        .render();
        assert!(text.contains("port = '5555'\n"));
        assert!(text.contains(
            "output_plugin_libraries = 'pgoutput, test_decoding, figoutput, wal2json'\n"
        ));
        assert!(text.ends_with("logical_decoding_work_mem = '64kB'\nx.y = 'it''s'\n"));
    }

    #[test]
    fn output_plugin_libraries_only_when_known() {
        let text = ServerConfig {
            port: 1,
            socket_dir: Path::new("/s"),
            knows_output_plugin_libraries: false,
            extra: &[],
        }
        .render();
        assert!(!text.contains("output_plugin_libraries"));
    }

    #[test]
    fn setting_names_cannot_smuggle_lines() {
        assert!(validate_name("logical_decoding_work_mem").is_ok());
        assert!(validate_name("fig.option").is_ok());
        assert!(validate_name("a = 1\nfsync").is_err());
        assert!(validate_name("").is_err());
    }
}
