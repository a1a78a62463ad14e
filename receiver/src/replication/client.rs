//! [`ReplicationClient`]: a `replication=database` session in command mode.
//!
//! ```text
//! connect: StartupMessage(user, database, replication=database, …)
//!          ◀ Authentication{Cleartext|MD5|SASL…}  ▶ password / SCRAM-SHA-256 exchange
//!          ◀ AuthenticationOk, ParameterStatus*, BackendKeyData, ReadyForQuery
//! command: Query("IDENTIFY_SYSTEM" | "CREATE_REPLICATION_SLOT …" | …)
//!          ◀ RowDescription, DataRow*, CommandComplete, ReadyForQuery   (or ErrorResponse, ReadyForQuery)
//! stream:  Query("START_REPLICATION SLOT …")  ◀ CopyBothResponse  → ReplicationStream
//! ```
//!
//! Commands are not cancel-safe: dropping a command's future halfway leaves the session in an unknown
//! state, and every later call returns [`ReplicationError::Broken`]. Streaming is (see
//! [`ReplicationStream`]).

use std::collections::HashMap;

use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use super::commands::{self, SnapshotAction};
use super::error::{ReplicationError, Result, ServerError};
use super::lsn::Lsn;
use super::stream::ReplicationStream;
use super::wire::{Backend, Wire};
use crate::conn::auth::Request;
use crate::conn::tls::{self, Attempt};
use crate::conn::transport::{open, with_connect_timeout};
use crate::conn::{ConnConfig, ConnectError, PasswordAuth};

/// Session settings sent in the startup packet. The output plugin formats values with the walsender's
/// settings, so fixing them here makes its text output the same on every server: UTF-8 (pgoutput converts
/// text to the client encoding), ISO dates, UTC times, round-trippable floats.
pub const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO, MDY"),
    ("IntervalStyle", "postgres"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "3"),
];

/// The answer to `IDENTIFY_SYSTEM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    /// The cluster's unique system identifier (`pg_control_system().system_identifier`).
    pub systemid: u64,
    /// The current timeline.
    pub timeline: u32,
    /// The current WAL flush position.
    pub xlogpos: Lsn,
    /// The database this session is connected to.
    pub dbname: Option<String>,
}

/// The answer to `CREATE_REPLICATION_SLOT … LOGICAL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    /// The slot's name.
    pub name: String,
    /// The LSN from which the slot has all changes: every transaction committing after it will be
    /// streamed; the exported snapshot shows the data as of this point.
    pub consistent_point: Lsn,
    /// The exported snapshot's name ([`SnapshotAction::Export`] only). Valid only until this client runs
    /// another command or is dropped: import it (`SET TRANSACTION ISOLATION LEVEL REPEATABLE READ;
    /// SET TRANSACTION SNAPSHOT '…'`) in another session first.
    pub snapshot_name: Option<String>,
    /// The output plugin.
    pub plugin: String,
}

/// The rows of a simple-query result, all values as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextRows {
    /// Column names of the (last) row description.
    pub columns: Vec<String>,
    /// Rows; `None` is SQL NULL.
    pub rows: Vec<Vec<Option<String>>>,
    /// The command tag of the last completed command (`IDENTIFY_SYSTEM`, `CREATE_REPLICATION_SLOT`…).
    pub command_tag: Option<String>,
}

impl TextRows {
    /// The value of column `column` in row `row`; `None` for NULL, a missing row or column.
    pub fn get(&self, row: usize, column: &str) -> Option<&str> {
        let idx = self.columns.iter().position(|c| c == column)?;
        self.rows.get(row)?.get(idx)?.as_deref()
    }
}

/// A replication session (`replication=database`) in command mode.
pub struct ReplicationClient {
    pub(crate) wire: Wire,
    user: String,
    parameters: HashMap<String, String>,
    backend_pid: Option<i32>,
    /// Set while a command is in flight; a command future dropped halfway leaves it set.
    busy: bool,
    pub(crate) broken: bool,
}

impl std::fmt::Debug for ReplicationClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationClient")
            .field("target", &self.wire.transport().target())
            .field("user", &self.user)
            .field("server_version", &self.server_version())
            .field("backend_pid", &self.backend_pid)
            .field("broken", &(self.broken || self.busy))
            .finish()
    }
}

fn unexpected(what: &str, m: &Backend) -> ReplicationError {
    ReplicationError::Protocol {
        reason: format!("unexpected {} {what}", describe(m)),
    }
}

/// A short name of a backend message, for errors.
pub(crate) fn describe(m: &Backend) -> &'static str {
    match m {
        Backend::CopyBothResponse => "CopyBothResponse",
        Backend::Message(m) => match m {
            Message::AuthenticationOk => "AuthenticationOk",
            Message::AuthenticationCleartextPassword
            | Message::AuthenticationMd5Password(_)
            | Message::AuthenticationSasl(_)
            | Message::AuthenticationSaslContinue(_)
            | Message::AuthenticationSaslFinal(_) => "authentication request",
            Message::BackendKeyData(_) => "BackendKeyData",
            Message::CommandComplete(_) => "CommandComplete",
            Message::CopyData(_) => "CopyData",
            Message::CopyDone => "CopyDone",
            Message::CopyInResponse(_) => "CopyInResponse",
            Message::CopyOutResponse(_) => "CopyOutResponse",
            Message::DataRow(_) => "DataRow",
            Message::EmptyQueryResponse => "EmptyQueryResponse",
            Message::ErrorResponse(_) => "ErrorResponse",
            Message::NoticeResponse(_) => "NoticeResponse",
            Message::ParameterStatus(_) => "ParameterStatus",
            Message::ReadyForQuery(_) => "ReadyForQuery",
            Message::RowDescription(_) => "RowDescription",
            _ => "message",
        },
    }
}

fn text(bytes: &[u8], what: &str) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| ReplicationError::Protocol {
        reason: format!("{what} is not valid UTF-8 although client_encoding is UTF8"),
    })
}

fn io_text(r: std::io::Result<&str>, what: &str) -> Result<String> {
    r.map(str::to_owned)
        .map_err(|e| ReplicationError::Protocol {
            reason: format!("malformed {what}: {e}"),
        })
}

/// Sorts an error received during startup into what the user must fix.
fn startup_error(user: &str, server: Box<ServerError>) -> ReplicationError {
    let lower = server.message.to_lowercase();
    match server.code.as_str() {
        // invalid_password
        "28P01" => ReplicationError::Auth {
            user: user.to_owned(),
            server,
        },
        // invalid_authorization_specification: pg_hba rejection, unknown role…
        "28000" if lower.contains("replication") || lower.contains("pg_hba.conf") => {
            ReplicationError::ReplicationRefused { server }
        }
        "28000" => ReplicationError::Auth {
            user: user.to_owned(),
            server,
        },
        // insufficient_privilege: the role lacks REPLICATION ("must be superuser or replication role",
        // "permission denied to start WAL sender").
        "42501" => ReplicationError::ReplicationRefused { server },
        _ => ReplicationError::Server {
            command: "connect".into(),
            server,
        },
    }
}

impl ReplicationClient {
    /// Opens a `replication=database` session: transport from `config` (sslmode applied), startup,
    /// authentication (SCRAM-SHA-256, with channel binding over TLS; MD5 or cleartext only when
    /// `allow_password_auth` names them), then waits for ReadyForQuery. The whole exchange runs under
    /// `config.connect_timeout`.
    pub async fn connect(config: &ConnConfig) -> Result<ReplicationClient> {
        with_connect_timeout(config, async {
            let plan = tls::plan(config);
            match (Self::connect_inner(config, plan.first).await, plan.on_refusal) {
                (Err(e), Some(retry)) if is_startup_refusal(&e) => {
                    tracing::debug!(error = %e, "sslmode=allow: the server refused the plain session; trying TLS");
                    Self::connect_inner(config, retry).await
                }
                (result, _) => result,
            }
        })
        .await
    }

    /// A client in command mode over a transport whose startup is already done (tests play the server).
    #[cfg(test)]
    pub(crate) fn for_tests(transport: crate::conn::Transport) -> ReplicationClient {
        ReplicationClient {
            wire: Wire::new(transport),
            user: "test".into(),
            parameters: HashMap::new(),
            backend_pid: None,
            busy: false,
            broken: false,
        }
    }

    async fn connect_inner(config: &ConnConfig, attempt: Attempt) -> Result<ReplicationClient> {
        let transport = open(config, attempt).await?;
        let mut client = ReplicationClient {
            wire: Wire::new(transport),
            user: config.user.clone(),
            parameters: HashMap::new(),
            backend_pid: None,
            busy: true,
            broken: false,
        };
        let mut params: Vec<(&str, &str)> = vec![
            ("user", &config.user),
            ("database", config.database()),
            ("replication", "database"),
        ];
        if let Some(app) = &config.application_name {
            params.push(("application_name", app));
        }
        params.extend_from_slice(SESSION_SETTINGS);
        for (k, v) in &params {
            if k.contains('\0') || v.contains('\0') {
                return Err(ReplicationError::InvalidArgument {
                    what: "startup parameter",
                    reason: format!("`{k}` contains a NUL byte"),
                });
            }
        }
        frontend::startup_message(params.iter().copied(), client.wire.out())?;
        client.wire.flush().await?;
        client.authenticate(config).await?;
        loop {
            match client.wire.read().await? {
                Backend::Message(Message::ReadyForQuery(_)) => break,
                Backend::Message(Message::BackendKeyData(k)) => {
                    client.backend_pid = Some(k.process_id())
                }
                Backend::Message(Message::ErrorResponse(e)) => {
                    return Err(startup_error(
                        &config.user,
                        ServerError::from_fields(e.fields()),
                    ))
                }
                m => client.handle_async(m, "during startup")?,
            }
        }
        client.busy = false;
        tracing::debug!(
            target = %client.wire.transport().target(),
            server_version = client.server_version().unwrap_or("?"),
            pid = ?client.backend_pid,
            "replication connection ready"
        );
        Ok(client)
    }

    async fn authenticate(&mut self, config: &ConnConfig) -> Result<()> {
        let policy = self.wire.transport().auth_policy(config);
        let refused = |refused| {
            ReplicationError::Connect(ConnectError::Auth {
                target: config.target(),
                refused,
            })
        };
        let mut after_sasl = false;
        let user = config.user.clone();
        let password = |method: &'static str| {
            config
                .password
                .as_ref()
                .map(|p| p.expose().as_bytes().to_vec())
                .ok_or_else(|| ReplicationError::PasswordRequired {
                    user: user.clone(),
                    method,
                })
        };
        loop {
            let m = self.wire.read().await?;
            let Backend::Message(msg) = m else {
                return Err(unexpected("during authentication", &m));
            };
            match msg {
                Message::AuthenticationOk => {
                    policy.check(Request::Ok { after_sasl }).map_err(refused)?;
                    return Ok(());
                }
                Message::AuthenticationCleartextPassword => {
                    policy
                        .check(Request::Password(PasswordAuth::Cleartext))
                        .map_err(refused)?;
                    let pw = password("password")?;
                    frontend::password_message(&pw, self.wire.out())?;
                    self.wire.flush().await?;
                }
                Message::AuthenticationMd5Password(body) => {
                    policy
                        .check(Request::Password(PasswordAuth::Md5))
                        .map_err(refused)?;
                    let pw = password("md5")?;
                    let hash = md5_hash(config.user.as_bytes(), &pw, body.salt());
                    frontend::password_message(hash.as_bytes(), self.wire.out())?;
                    self.wire.flush().await?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = Vec::new();
                    let mut it = body.mechanisms();
                    while let Some(m) = it.next().map_err(|e| ReplicationError::Protocol {
                        reason: format!("malformed SASL mechanism list: {e}"),
                    })? {
                        mechanisms.push(m.to_owned());
                    }
                    let scram = policy.choose_scram(&mechanisms).map_err(refused)?;
                    let pw = password("SCRAM-SHA-256")?;
                    self.scram(&pw, scram).await?;
                    after_sasl = true;
                }
                Message::ErrorResponse(e) => {
                    return Err(startup_error(
                        &config.user,
                        ServerError::from_fields(e.fields()),
                    ))
                }
                Message::AuthenticationKerberosV5 => return Err(unsupported("Kerberos V5")),
                Message::AuthenticationScmCredential => return Err(unsupported("SCM credential")),
                Message::AuthenticationGss | Message::AuthenticationGssContinue(_) => {
                    return Err(unsupported("GSSAPI"))
                }
                Message::AuthenticationSspi => return Err(unsupported("SSPI")),
                Message::NoticeResponse(n) => log_notice(ServerError::from_fields(n.fields())),
                other => {
                    return Err(unexpected(
                        "during authentication",
                        &Backend::Message(other),
                    ))
                }
            }
        }
    }

    /// The SCRAM-SHA-256 exchange (RFC 5802/7677), with `tls-server-end-point` channel binding when
    /// the policy chose `-PLUS`. The server's signature is verified (`finish`).
    async fn scram(&mut self, password: &[u8], choice: crate::conn::auth::Scram) -> Result<()> {
        let mut scram = sasl::ScramSha256::new(password, choice.channel_binding());
        frontend::sasl_initial_response(choice.mechanism(), scram.message(), self.wire.out())?;
        self.wire.flush().await?;

        let data = self.read_sasl(SaslStep::Continue).await?;
        scram.update(&data).map_err(scram_error)?;
        frontend::sasl_response(scram.message(), self.wire.out())?;
        self.wire.flush().await?;

        let data = self.read_sasl(SaslStep::Final).await?;
        scram.finish(&data).map_err(scram_error)?;
        Ok(())
    }

    /// The next authentication message; an ErrorResponse becomes the right typed error.
    /// The server's next SASL message, which must be the step the exchange is at.
    async fn read_sasl(&mut self, step: SaslStep) -> Result<Vec<u8>> {
        match (step, self.read_auth().await?) {
            (SaslStep::Continue, Message::AuthenticationSaslContinue(body)) => {
                Ok(body.data().to_vec())
            }
            (SaslStep::Final, Message::AuthenticationSaslFinal(body)) => Ok(body.data().to_vec()),
            (SaslStep::Continue, other) => Err(unexpected(
                "instead of SASL continue",
                &Backend::Message(other),
            )),
            (SaslStep::Final, other) => Err(unexpected(
                "instead of SASL final",
                &Backend::Message(other),
            )),
        }
    }

    async fn read_auth(&mut self) -> Result<Message> {
        loop {
            match self.wire.read().await? {
                Backend::Message(Message::ErrorResponse(e)) => {
                    return Err(startup_error(
                        &self.user,
                        ServerError::from_fields(e.fields()),
                    ))
                }
                Backend::Message(Message::NoticeResponse(n)) => {
                    log_notice(ServerError::from_fields(n.fields()))
                }
                Backend::Message(m) => return Ok(m),
                m => return Err(unexpected("during authentication", &m)),
            }
        }
    }

    /// Handles a message that may arrive at any time (ParameterStatus, NoticeResponse); anything else is a
    /// protocol violation.
    pub(crate) fn handle_async(&mut self, m: Backend, when: &str) -> Result<()> {
        match m {
            Backend::Message(Message::ParameterStatus(p)) => {
                let name = io_text(p.name(), "ParameterStatus name")?;
                let value = io_text(p.value(), "ParameterStatus value")?;
                self.parameters.insert(name, value);
                Ok(())
            }
            Backend::Message(Message::NoticeResponse(n)) => {
                log_notice(ServerError::from_fields(n.fields()));
                Ok(())
            }
            m => Err(unexpected(when, &m)),
        }
    }

    /// A parameter the server reported (`server_version`, `server_encoding`, `integer_datetimes`…).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }

    /// The server's `server_version`, e.g. `15.20 (Debian 15.20-1.pgdg120+1)`.
    pub fn server_version(&self) -> Option<&str> {
        self.parameter("server_version")
    }

    /// The server's major version (15 for 15.20).
    pub fn server_major(&self) -> Option<u32> {
        self.server_version().and_then(commands::server_major)
    }

    /// The walsender's process id (`pg_stat_replication.pid`), when the server sent it.
    pub fn backend_pid(&self) -> Option<i32> {
        self.backend_pid
    }

    /// Sets the largest backend message accepted (default 1 GiB + 1 MiB, PostgreSQL's own limit on a
    /// value plus headers). A larger announced length is a [`ReplicationError::MessageTooLarge`].
    pub fn set_max_message_len(&mut self, max: usize) {
        self.wire.set_max_message_len(max);
    }

    fn begin_command(&mut self) -> Result<()> {
        if self.broken || self.busy {
            self.broken = true;
            return Err(ReplicationError::Broken);
        }
        self.busy = true;
        Ok(())
    }

    /// Runs one command with the simple query protocol and returns its rows as text. For replication
    /// commands (`IDENTIFY_SYSTEM`, `READ_REPLICATION_SLOT`, `TIMELINE_HISTORY`, `SHOW`…) and plain SQL
    /// that a `replication=database` session accepts. Not for `START_REPLICATION` (use
    /// [`start_logical`](Self::start_logical)) or COPY. Not cancel-safe.
    pub async fn simple_query(&mut self, command: &str) -> Result<TextRows> {
        self.run(command, command).await
    }

    /// `simple_query`, with `shown` as the command's name in errors.
    async fn run(&mut self, command: &str, shown: &str) -> Result<TextRows> {
        if command.contains('\0') {
            return Err(ReplicationError::InvalidArgument {
                what: "command",
                reason: "contains a NUL byte".into(),
            });
        }
        self.begin_command()?;
        let result = self.run_inner(command, shown).await;
        if matches!(
            result,
            Err(ReplicationError::Io(_)
                | ReplicationError::Closed
                | ReplicationError::Protocol { .. }
                | ReplicationError::MessageTooLarge { .. })
        ) {
            self.broken = true;
        }
        result
    }

    async fn run_inner(&mut self, command: &str, shown: &str) -> Result<TextRows> {
        frontend::query(command, self.wire.out())?;
        self.wire.flush().await?;
        let mut out = TextRows::default();
        let mut error = None;
        loop {
            match self.wire.read().await? {
                Backend::Message(Message::RowDescription(d)) => {
                    out.columns.clear();
                    let mut fields = d.fields();
                    while let Some(f) = fields.next().map_err(|e| ReplicationError::Protocol {
                        reason: format!("malformed RowDescription: {e}"),
                    })? {
                        out.columns.push(f.name().to_owned());
                    }
                }
                Backend::Message(Message::DataRow(row)) => {
                    let buf = row.buffer();
                    let mut values = Vec::with_capacity(out.columns.len());
                    let mut ranges = row.ranges();
                    while let Some(r) = ranges.next().map_err(|e| ReplicationError::Protocol {
                        reason: format!("malformed DataRow: {e}"),
                    })? {
                        values.push(match r {
                            None => None,
                            Some(r) => Some(text(
                                buf.get(r).ok_or_else(|| ReplicationError::Protocol {
                                    reason: "DataRow value out of bounds".into(),
                                })?,
                                "a result value",
                            )?),
                        });
                    }
                    if values.len() != out.columns.len() {
                        return Err(ReplicationError::Protocol {
                            reason: format!(
                                "DataRow has {} values for {} columns",
                                values.len(),
                                out.columns.len()
                            ),
                        });
                    }
                    out.rows.push(values);
                }
                Backend::Message(Message::CommandComplete(c)) => {
                    out.command_tag = Some(io_text(c.tag(), "CommandComplete")?);
                }
                Backend::Message(Message::EmptyQueryResponse) => {}
                Backend::Message(Message::ErrorResponse(e)) => {
                    error = Some(ServerError::from_fields(e.fields()));
                }
                Backend::Message(Message::ReadyForQuery(_)) => break,
                m @ Backend::Message(Message::ParameterStatus(_) | Message::NoticeResponse(_)) => {
                    self.handle_async(m, "")?
                }
                m => {
                    return Err(unexpected(
                        &format!("in answer to `{shown}` (use start_logical for START_REPLICATION; COPY is not supported here)"),
                        &m,
                    ))
                }
            }
        }
        self.busy = false;
        match error {
            Some(server) => Err(ReplicationError::Server {
                command: shown.to_owned(),
                server,
            }),
            None => Ok(out),
        }
    }

    /// `IDENTIFY_SYSTEM`: the cluster's identity, timeline and current WAL position.
    pub async fn identify_system(&mut self) -> Result<SystemInfo> {
        const CMD: &str = "IDENTIFY_SYSTEM";
        let rows = self.simple_query(CMD).await?;
        let bad = |reason: String| ReplicationError::BadResponse {
            command: CMD.into(),
            reason,
        };
        if rows.rows.len() != 1 {
            return Err(bad(format!("{} rows, 1 expected", rows.rows.len())));
        }
        let field = |name: &str| {
            rows.get(0, name)
                .ok_or_else(|| bad(format!("column `{name}` missing or NULL")))
        };
        Ok(SystemInfo {
            systemid: field("systemid")?
                .parse()
                .map_err(|_| bad("systemid is not an unsigned integer".into()))?,
            timeline: field("timeline")?
                .parse()
                .map_err(|_| bad("timeline is not an unsigned integer".into()))?,
            xlogpos: field("xlogpos")?
                .parse()
                .map_err(|e| bad(format!("xlogpos: {e}")))?,
            dbname: rows.get(0, "dbname").map(str::to_owned),
        })
    }

    /// `CREATE_REPLICATION_SLOT name [TEMPORARY] LOGICAL plugin …`, in the syntax of the server's version
    /// (PostgreSQL 15+: `(SNAPSHOT 'export'|'nothing'|'use')`; 10–14: `EXPORT_SNAPSHOT`,
    /// `NOEXPORT_SNAPSHOT`, `USE_SNAPSHOT`).
    ///
    /// With [`SnapshotAction::Export`], the returned snapshot name can be imported by other sessions only
    /// while this client stays idle: the server forgets the snapshot as soon as this connection runs its
    /// next command (including [`start_logical`](Self::start_logical)) or closes. Import it first, then
    /// go on. A temporary slot is dropped when this connection ends.
    pub async fn create_logical_slot(
        &mut self,
        name: &str,
        plugin: &str,
        snapshot: SnapshotAction,
        temporary: bool,
    ) -> Result<SlotInfo> {
        let major = self.server_major().unwrap_or(0);
        if major < 10 {
            return Err(ReplicationError::UnsupportedServer {
                version: self.server_version().unwrap_or("(unknown)").to_owned(),
            });
        }
        let cmd = commands::create_logical_slot(major, name, plugin, snapshot, temporary)?;
        let rows = self.simple_query(&cmd).await?;
        let bad = |reason: String| ReplicationError::BadResponse {
            command: cmd.clone(),
            reason,
        };
        if rows.rows.len() != 1 {
            return Err(bad(format!("{} rows, 1 expected", rows.rows.len())));
        }
        let field = |name: &str| {
            rows.get(0, name)
                .ok_or_else(|| bad(format!("column `{name}` missing or NULL")))
        };
        let info = SlotInfo {
            name: field("slot_name")?.to_owned(),
            consistent_point: field("consistent_point")?
                .parse()
                .map_err(|e| bad(format!("consistent_point: {e}")))?,
            snapshot_name: rows.get(0, "snapshot_name").map(str::to_owned),
            plugin: rows.get(0, "output_plugin").unwrap_or(plugin).to_owned(),
        };
        if snapshot == SnapshotAction::Export && info.snapshot_name.is_none() {
            return Err(bad(
                "no snapshot_name although a snapshot export was asked for".into(),
            ));
        }
        Ok(info)
    }

    /// `DROP_REPLICATION_SLOT name`. Fails if the slot is in use by another connection.
    pub async fn drop_slot(&mut self, name: &str) -> Result<()> {
        let cmd = commands::drop_slot(name)?;
        self.simple_query(&cmd).await?;
        Ok(())
    }

    /// `START_REPLICATION SLOT slot LOGICAL start_lsn (options…)`: switches the session into CopyBoth
    /// mode and returns the stream. `start_lsn` = [`Lsn::INVALID`] starts at the slot's
    /// `confirmed_flush_lsn`; the server never starts before it. Option names are sent double-quoted and
    /// values single-quoted, e.g. `[("proto_version", "1"), ("publication_names", "p")]` for pgoutput.
    ///
    /// On a server error (no such slot, slot active elsewhere, bad option), the error is returned and the
    /// client is gone with it: open a new one.
    pub async fn start_logical(
        mut self,
        slot: &str,
        start_lsn: Lsn,
        options: &[(String, String)],
    ) -> Result<ReplicationStream> {
        let cmd = commands::start_logical(slot, start_lsn, options)?;
        self.begin_command()?;
        frontend::query(&cmd, self.wire.out())?;
        self.wire.flush().await?;
        loop {
            match self.wire.read().await? {
                Backend::CopyBothResponse => break,
                Backend::Message(Message::ErrorResponse(e)) => {
                    return Err(ReplicationError::Server {
                        command: cmd,
                        server: ServerError::from_fields(e.fields()),
                    })
                }
                m => self.handle_async(m, &format!("in answer to `{cmd}`"))?,
            }
        }
        self.busy = false;
        tracing::info!(slot, start = %start_lsn, "logical replication streaming started");
        Ok(ReplicationStream::new(self, start_lsn))
    }

    /// Ends the session politely (Terminate). Dropping the client also closes the connection.
    pub async fn close(mut self) -> Result<()> {
        frontend::terminate(self.wire.out());
        self.wire.flush().await
    }
}

/// Whether the server refused the session during startup (SQLSTATE class 28: pg_hba.conf, password):
/// `sslmode=allow` then tries again with TLS.
fn is_startup_refusal(e: &ReplicationError) -> bool {
    matches!(e, ReplicationError::Auth { server, .. } | ReplicationError::ReplicationRefused { server } if server.code.starts_with("28"))
}

fn unsupported(method: &str) -> ReplicationError {
    ReplicationError::UnsupportedAuth {
        method: method.to_owned(),
    }
}

/// Logs a NoticeResponse at a level matching its severity.
pub(crate) fn log_notice(n: Box<ServerError>) {
    match n.severity.as_str() {
        "WARNING" => tracing::warn!(code = %n.code, "server: {n}"),
        "DEBUG" | "LOG" => tracing::debug!(code = %n.code, "server: {n}"),
        _ => tracing::info!(code = %n.code, "server: {n}"),
    }
}

#[derive(Clone, Copy)]
enum SaslStep {
    Continue,
    Final,
}

fn scram_error(e: std::io::Error) -> ReplicationError {
    ReplicationError::Scram {
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str, message: &str) -> Box<ServerError> {
        Box::new(ServerError {
            severity: "FATAL".into(),
            code: code.into(),
            message: message.into(),
            ..ServerError::default()
        })
    }

    #[test]
    fn startup_errors_are_sorted_by_what_to_fix() {
        let e = startup_error(
            "u",
            server("28P01", "password authentication failed for user \"u\""),
        );
        assert!(matches!(e, ReplicationError::Auth { .. }));
        let e = startup_error(
            "u",
            server(
                "28000",
                "no pg_hba.conf entry for host \"127.0.0.1\", user \"u\", database \"d\"",
            ),
        );
        assert!(matches!(e, ReplicationError::ReplicationRefused { .. }));
        let e = startup_error("u", server("28000", "role \"u\" does not exist"));
        assert!(matches!(e, ReplicationError::Auth { .. }));
        let e = startup_error(
            "u",
            server(
                "42501",
                "must be superuser or replication role to start walsender",
            ),
        );
        assert!(matches!(e, ReplicationError::ReplicationRefused { .. }));
        assert!(e.to_string().contains("ALTER ROLE"));
        let e = startup_error("u", server("53300", "sorry, too many clients already"));
        assert!(e.is_transient());
        let e = startup_error("u", server("3D000", "database \"d\" does not exist"));
        assert!(matches!(e, ReplicationError::Server { .. }));
        assert!(!e.is_transient());
    }

    #[test]
    fn text_rows_lookup() {
        let rows = TextRows {
            columns: vec!["a".into(), "b".into()],
            rows: vec![vec![Some("1".into()), None]],
            command_tag: None,
        };
        assert_eq!(rows.get(0, "a"), Some("1"));
        assert_eq!(rows.get(0, "b"), None);
        assert_eq!(rows.get(0, "c"), None);
        assert_eq!(rows.get(1, "a"), None);
    }
}
