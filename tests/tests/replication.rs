//! The replication client against real servers: connection and authentication, IDENTIFY_SYSTEM, slots
//! with an exported snapshot, streaming with pgoutput and test_decoding, keepalives, and the rule that the
//! flush position the server sees is exactly what the caller declared durable (DESIGN.md rule 1).

use std::future::Future;
use std::time::{Duration, Instant};

use fig_receiver::conn::{
    AllowedPasswordAuth, AuthRefused, ConnConfig, ConnectError, Password, PasswordAuth, SslMode,
    TlsError,
};
use fig_receiver::replication::{
    Lsn, ReplicationClient, ReplicationError, ReplicationStream, SnapshotAction, StreamEvent,
};
use fig_tests::PgServer;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn block_on<F: Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

fn config(pg: &PgServer) -> ConnConfig {
    ConnConfig::parse(&pg.url("postgres")).unwrap()
}

fn config_as(pg: &PgServer, user: &str, password: Option<&str>) -> ConnConfig {
    let mut c = config(pg);
    c.user = user.to_owned();
    c.password = password.map(Password::new);
    c
}

fn opts(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The slot's `confirmed_flush_lsn` as the server reports it.
fn confirmed_flush(pg: &PgServer, slot: &str) -> Lsn {
    pg.psql(&format!(
        "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '{slot}'"
    ))
    .trim()
    .parse()
    .unwrap()
}

/// The next XLogData within `limit` (keepalives are skipped).
async fn next_data(stream: &mut ReplicationStream, limit: Duration) -> (Lsn, Vec<u8>) {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.next()).await {
            Err(_) => panic!("no XLogData within {limit:?}"),
            Ok(Err(e)) => panic!("stream failed: {e}"),
            Ok(Ok(None)) => panic!("stream ended"),
            Ok(Ok(Some(StreamEvent::XLogData {
                wal_start, data, ..
            }))) => return (wal_start, data.to_vec()),
            Ok(Ok(Some(StreamEvent::Keepalive { .. }))) => {}
        }
    }
}

/// test_decoding messages until one that starts with `COMMIT`; returns them and the commit's LSN.
async fn next_transaction(stream: &mut ReplicationStream) -> (Vec<String>, Lsn) {
    let mut messages = Vec::new();
    loop {
        let (lsn, data) = next_data(stream, Duration::from_secs(20)).await;
        let text = String::from_utf8(data).unwrap();
        let is_commit = text.starts_with("COMMIT");
        messages.push(text);
        if is_commit {
            return (messages, lsn);
        }
    }
}

/// Calls `next` for `period`, so the stream can send its status updates and answer keepalives;
/// returns the events seen.
async fn pump(stream: &mut ReplicationStream, period: Duration) -> Vec<StreamEvent> {
    let deadline = tokio::time::Instant::now() + period;
    let mut events = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => return events,
            Ok(Ok(Some(e))) => events.push(e),
            Ok(Ok(None)) => panic!("stream ended"),
            Ok(Err(e)) => panic!("stream failed: {e}"),
        }
    }
}

#[test]
fn identify_system_matches_the_server() {
    let pg = PgServer::start();
    let want_id = pg
        .psql("SELECT system_identifier FROM pg_control_system()")
        .trim()
        .parse::<u64>()
        .unwrap();
    let info = block_on(async {
        let mut client = ReplicationClient::connect(&config(&pg)).await.unwrap();
        assert_eq!(client.server_major(), Some(pg.server_version_num() / 10000));
        assert!(client.backend_pid().is_some());
        let info = client.identify_system().await.unwrap();
        client.close().await.unwrap();
        info
    });
    assert_eq!(info.systemid, want_id);
    assert_eq!(info.timeline, 1);
    assert_eq!(info.dbname.as_deref(), Some("postgres"));
    let current: Lsn = pg
        .psql("SELECT pg_current_wal_lsn()")
        .trim()
        .parse()
        .unwrap();
    assert!(info.xlogpos > Lsn(0) && info.xlogpos <= current);
}

#[test]
fn connects_over_the_unix_socket_for_sql_and_replication() {
    let pg = PgServer::start();
    let cfg = ConnConfig::parse(&format!(
        "host={} port={} user=postgres dbname=postgres application_name=fig_unix",
        pg.socket_dir().display(),
        pg.port()
    ))
    .unwrap();
    block_on(async {
        let mut repl = ReplicationClient::connect(&cfg).await.unwrap();
        repl.identify_system().await.unwrap();
        let sql = cfg.connect_sql().await.unwrap();
        let row = sql
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'fig_unix' AND backend_type = 'walsender'",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 1);
    });
}

#[test]
fn sslmode_require_against_a_plaintext_server_is_refused_not_downgraded() {
    let pg = PgServer::start();
    let mut cfg = config(&pg);
    cfg.ssl_mode = SslMode::Require;
    block_on(async {
        let e = ReplicationClient::connect(&cfg).await.unwrap_err();
        assert!(
            matches!(
                e,
                ReplicationError::Connect(ConnectError::Tls(TlsError::ServerRefused { .. }))
            ),
            "{e}"
        );
        assert!(e.to_string().contains("ssl = on"), "{e}");
        let e = cfg.connect_sql().await.unwrap_err();
        assert!(
            matches!(e, ConnectError::Tls(TlsError::ServerRefused { .. })),
            "{e}"
        );
    });
}

#[test]
fn exported_snapshot_is_importable_while_the_replication_connection_is_held() {
    let pg = PgServer::start();
    pg.psql("CREATE TABLE t (id int PRIMARY KEY, note text); INSERT INTO t VALUES (1, 'before');");
    let cfg = config(&pg);
    block_on(async {
        let mut repl = ReplicationClient::connect(&cfg).await.unwrap();
        let slot = repl
            .create_logical_slot("snap_slot", "test_decoding", SnapshotAction::Export, false)
            .await
            .unwrap();
        assert_eq!(slot.name, "snap_slot");
        assert_eq!(slot.plugin, "test_decoding");
        assert!(slot.consistent_point > Lsn(0));
        let snapshot = slot.snapshot_name.clone().expect("snapshot name");

        // A row committed after the slot's consistent point: not in the snapshot, but in the stream.
        pg.psql("INSERT INTO t VALUES (2, 'after')");

        let sql = cfg.connect_sql().await.unwrap();
        sql.batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '{snapshot}'"
        ))
        .await
        .unwrap();
        let ids: Vec<i32> = sql
            .query("SELECT id FROM t ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(ids, vec![1]);
        sql.batch_execute("COMMIT").await.unwrap();

        // The snapshot and the stream meet exactly: the stream starts with the row the snapshot lacks.
        let mut stream = repl
            .start_logical("snap_slot", Lsn::INVALID, &opts(&[("include-xids", "0")]))
            .await
            .unwrap();
        let (messages, _) = next_transaction(&mut stream).await;
        assert_eq!(
            messages,
            vec![
                "BEGIN".to_string(),
                "table public.t: INSERT: id[integer]:2 note[text]:'after'".to_string(),
                "COMMIT".to_string()
            ]
        );

        // Once another command ran on the replication connection the snapshot is gone.
        let mut repl = stream.finish().await.unwrap();
        let sql2 = cfg.connect_sql().await.unwrap();
        let err = sql2
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '{snapshot}'"
            ))
            .await
            .unwrap_err();
        let msg = fig_receiver::conn::describe_sql_error(&err);
        assert!(msg.contains("snapshot"), "{msg}");
        repl.drop_slot("snap_slot").await.unwrap();
    });
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_replication_slots").trim(),
        "0"
    );
}

#[test]
fn streams_pgoutput_with_plugin_options() {
    let pg = PgServer::start();
    pg.psql("CREATE TABLE accounts (id int PRIMARY KEY, owner text); CREATE PUBLICATION p FOR TABLE accounts;");
    block_on(async {
        let mut repl = ReplicationClient::connect(&config(&pg)).await.unwrap();
        repl.create_logical_slot("pgo", "pgoutput", SnapshotAction::NoExport, true)
            .await
            .unwrap();
        let mut stream = repl
            .start_logical(
                "pgo",
                Lsn::INVALID,
                &opts(&[("proto_version", "1"), ("publication_names", "p")]),
            )
            .await
            .unwrap();
        pg.psql("INSERT INTO accounts VALUES (7, 'ada-lovelace')");
        // pgoutput: Begin, Relation, Insert, Commit.
        let mut tags = Vec::new();
        let mut insert = None;
        while tags.last() != Some(&b'C') {
            let (_, data) = next_data(&mut stream, Duration::from_secs(20)).await;
            if data[0] == b'I' {
                insert = Some(data.clone());
            }
            tags.push(data[0]);
        }
        assert_eq!(tags, b"BRIC");
        let insert = insert.unwrap();
        assert!(
            insert.windows(12).any(|w| w == b"ada-lovelace"),
            "{insert:?}"
        );
        stream.finish().await.unwrap();
    });
}

#[test]
fn plugin_option_values_are_quoted() {
    let pg = PgServer::start();
    pg.psql("CREATE TABLE t (id int)");
    block_on(async {
        let mut repl = ReplicationClient::connect(&config(&pg)).await.unwrap();
        repl.create_logical_slot("q", "test_decoding", SnapshotAction::NoExport, true)
            .await
            .unwrap();
        // A publication name with a quote in it reaches the plugin intact: pgoutput then says it does
        // not exist, by that exact name.
        let mut stream = repl
            .start_logical(
                "q",
                Lsn::INVALID,
                &opts(&[("include-xids", "0"), ("skip-empty-xacts", "1")]),
            )
            .await
            .unwrap();
        pg.psql("INSERT INTO t VALUES (1)");
        let (messages, _) = next_transaction(&mut stream).await;
        assert_eq!(messages[1], "table public.t: INSERT: id[integer]:1");
        stream.finish().await.unwrap();

        let mut repl = ReplicationClient::connect(&config(&pg)).await.unwrap();
        repl.create_logical_slot("q2", "pgoutput", SnapshotAction::NoExport, true)
            .await
            .unwrap();
        let mut stream = repl
            .start_logical(
                "q2",
                Lsn::INVALID,
                &opts(&[("proto_version", "1"), ("publication_names", "it's")]),
            )
            .await
            .unwrap();
        pg.psql("INSERT INTO t VALUES (2)");
        let err = loop {
            match stream.next().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("stream ended without error"),
                Err(e) => break e,
            }
        };
        assert!(err.to_string().contains("\"it's\""), "{err}");
    });
}

#[test]
fn start_on_a_missing_slot_is_a_server_error() {
    let pg = PgServer::start();
    block_on(async {
        let repl = ReplicationClient::connect(&config(&pg)).await.unwrap();
        let err = repl
            .start_logical("nope", Lsn::INVALID, &[])
            .await
            .unwrap_err();
        assert_eq!(err.sqlstate(), Some("42704"), "{err}");
        assert!(!err.is_transient());
    });
}

#[test]
fn reads_are_cancel_safe_under_select() {
    let pg = PgServer::start();
    pg.psql("CREATE TABLE t (id int, pad text)");
    let (go, wait) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        // The rows are inserted while the stream is being read, so reads wait on the socket and end up
        // cancelled with partial messages in the buffer.
        let pg = &pg;
        s.spawn(move || {
            wait.recv().unwrap();
            pg.psql("INSERT INTO t SELECT g, repeat('x', 300) FROM generate_series(1, 3000) g");
        });
        block_on(async {
            let mut repl = ReplicationClient::connect(&config(pg)).await.unwrap();
            repl.create_logical_slot("cs", "test_decoding", SnapshotAction::NoExport, true)
                .await
                .unwrap();
            let mut stream = repl
                .start_logical("cs", Lsn::INVALID, &opts(&[("include-xids", "0")]))
                .await
                .unwrap();
            go.send(()).unwrap();
            // Poll `next` once and drop it whenever it would wait: every wait is a cancellation. No
            // message may be lost, duplicated or split.
            let mut inserts = 0;
            let mut cancelled = 0u64;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                assert!(
                    Instant::now() < deadline,
                    "no COMMIT after {inserts} inserts"
                );
                let polled = {
                    let mut next = std::pin::pin!(stream.next());
                    std::future::poll_fn(|cx| std::task::Poll::Ready(next.as_mut().poll(cx))).await
                };
                let event = match polled {
                    std::task::Poll::Pending => {
                        cancelled += 1;
                        tokio::task::yield_now().await;
                        continue;
                    }
                    std::task::Poll::Ready(ev) => ev.unwrap().unwrap(),
                };
                if let StreamEvent::XLogData { data, .. } = event {
                    if data.starts_with(b"table public.t: INSERT: id[integer]:") {
                        inserts += 1;
                        let want = format!(
                            "table public.t: INSERT: id[integer]:{inserts} pad[text]:'{}'",
                            "x".repeat(300)
                        );
                        assert_eq!(std::str::from_utf8(&data).unwrap(), want);
                    }
                    if data.starts_with(b"COMMIT") {
                        break;
                    }
                }
            }
            assert_eq!(inserts, 3000);
            assert!(cancelled > 0, "the test never cancelled a read");
        });
    });
}

#[test]
fn keepalives_are_answered_so_an_idle_stream_survives_a_short_wal_sender_timeout() {
    let pg = PgServer::builder()
        .setting("wal_sender_timeout", "2s")
        .start();
    pg.psql("CREATE TABLE t (id int)");
    block_on(async {
        let mut repl = ReplicationClient::connect(&config(&pg)).await.unwrap();
        repl.create_logical_slot("ka", "test_decoding", SnapshotAction::NoExport, true)
            .await
            .unwrap();
        let mut stream = repl
            .start_logical("ka", Lsn::INVALID, &opts(&[("include-xids", "0")]))
            .await
            .unwrap();
        // No timer-driven updates in this window: only the answers to the server's requests keep the
        // connection alive.
        stream.set_status_interval(Duration::from_secs(600));
        let events = pump(&mut stream, Duration::from_secs(6)).await;
        let asked = events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    StreamEvent::Keepalive {
                        reply_requested: true,
                        ..
                    }
                )
            })
            .count();
        assert!(
            asked >= 2,
            "the server asked for {asked} replies: {events:?}"
        );
        // Still alive: a new transaction arrives.
        pg.psql("INSERT INTO t VALUES (42)");
        let (messages, _) = next_transaction(&mut stream).await;
        assert_eq!(messages[1], "table public.t: INSERT: id[integer]:42");
        assert!(
            !pg.log_contents()
                .contains("terminating walsender process due to replication timeout"),
            "{}",
            pg.log_contents()
        );
    });
}

/// DESIGN.md rule 1: the slot's confirmed_flush_lsn moves only to what the caller declared durable,
/// never to what was merely received.
#[test]
fn status_updates_confirm_only_what_set_flushed_declared() {
    let pg = PgServer::start();
    pg.psql("CREATE TABLE t (id int)");
    block_on(async {
        let mut repl = ReplicationClient::connect(&config(&pg)).await.unwrap();
        let slot = repl
            .create_logical_slot("ack", "test_decoding", SnapshotAction::NoExport, false)
            .await
            .unwrap();
        let mut stream = repl
            .start_logical("ack", Lsn::INVALID, &opts(&[("include-xids", "0")]))
            .await
            .unwrap();
        stream.set_status_interval(Duration::from_millis(200));

        pg.psql("INSERT INTO t VALUES (1)");
        let (_, first_commit) = next_transaction(&mut stream).await;
        pg.psql("INSERT INTO t VALUES (2)");
        let (_, second_commit) = next_transaction(&mut stream).await;
        assert!(second_commit > first_commit);

        // Received both, declared nothing: timer updates go out, the slot does not move.
        pump(&mut stream, Duration::from_secs(1)).await;
        assert_eq!(confirmed_flush(&pg, "ack"), slot.consistent_point);

        // Declare the first transaction durable: the slot moves exactly there, not to the second.
        stream.set_flushed(first_commit);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            pump(&mut stream, Duration::from_millis(300)).await;
            let confirmed = confirmed_flush(&pg, "ack");
            if confirmed == first_commit {
                break;
            }
            assert!(
                confirmed < first_commit,
                "confirmed {confirmed} beyond {first_commit}"
            );
            assert!(
                Instant::now() < deadline,
                "the slot never reached {first_commit}"
            );
        }
        pump(&mut stream, Duration::from_secs(1)).await;
        assert_eq!(confirmed_flush(&pg, "ack"), first_commit);

        // A flush position that moves backwards is ignored.
        stream.set_flushed(Lsn(first_commit.0 - 1));
        assert_eq!(stream.flushed(), first_commit);

        // finish() sends a last update with the declared position, then returns the client.
        stream.set_flushed(second_commit);
        let mut repl = stream.finish().await.unwrap();
        assert_eq!(confirmed_flush(&pg, "ack"), second_commit);
        repl.drop_slot("ack").await.unwrap();
    });
}

#[test]
fn authentication_scram_md5_and_password_with_typed_errors() {
    let pg = PgServer::start();
    pg.psql(
        "SET password_encryption = 'scram-sha-256';
         CREATE ROLE fig_scram LOGIN REPLICATION PASSWORD 'correct horse';
         CREATE ROLE fig_plain LOGIN REPLICATION PASSWORD 'plain pw';
         CREATE ROLE fig_norepl LOGIN PASSWORD 'norepl';
         SET password_encryption = 'md5';
         CREATE ROLE fig_md5 LOGIN REPLICATION PASSWORD 'md5 pw';",
    );
    pg.write_pg_hba(
        "local all all trust
host all postgres 127.0.0.1/32 trust
host all fig_md5 127.0.0.1/32 md5
host all fig_plain 127.0.0.1/32 password
host all all 127.0.0.1/32 scram-sha-256
",
    );
    block_on(async {
        // The reload is asynchronous: wait until SCRAM is asked for.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match ReplicationClient::connect(&config_as(&pg, "fig_scram", None)).await {
                Err(ReplicationError::PasswordRequired { method, .. }) => {
                    assert_eq!(method, "SCRAM-SHA-256");
                    break;
                }
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "pg_hba.conf not applied: {other:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }

        let err = ReplicationClient::connect(&config_as(&pg, "fig_scram", Some("wrong")))
            .await
            .unwrap_err();
        assert!(matches!(err, ReplicationError::Auth { .. }), "{err}");
        assert_eq!(err.sqlstate(), Some("28P01"));
        assert!(!err.is_transient());
        assert!(
            !err.to_string().contains("wrong"),
            "the password leaked: {err}"
        );

        let mut ok =
            ReplicationClient::connect(&config_as(&pg, "fig_scram", Some("correct horse")))
                .await
                .unwrap();
        ok.identify_system().await.unwrap();

        for (user, good, method) in [
            ("fig_md5", "md5 pw", PasswordAuth::Md5),
            ("fig_plain", "plain pw", PasswordAuth::Cleartext),
        ] {
            // Refused by default on both connections, before any password is sent, saying how to allow it.
            let err = ReplicationClient::connect(&config_as(&pg, user, Some(good)))
                .await
                .unwrap_err();
            assert!(
                matches!(
                    &err,
                    ReplicationError::Connect(ConnectError::Auth {
                        refused: AuthRefused::PasswordMethod { method: m },
                        ..
                    }) if *m == method
                ),
                "{user}: {err}"
            );
            assert!(err.to_string().contains("allow_password_auth"), "{err}");
            assert!(!err.to_string().contains(good), "{err}");
            let err = config_as(&pg, user, Some(good))
                .connect_sql()
                .await
                .unwrap_err();
            assert!(
                matches!(
                    &err,
                    ConnectError::Auth {
                        refused: AuthRefused::PasswordMethod { method: m },
                        ..
                    } if *m == method
                ),
                "{user}: {err}"
            );

            let allowing = |pw: &str| {
                let mut c = config_as(&pg, user, Some(pw));
                c.allow_password_auth = AllowedPasswordAuth {
                    md5: method == PasswordAuth::Md5,
                    cleartext: method == PasswordAuth::Cleartext,
                };
                c
            };
            let err = ReplicationClient::connect(&allowing("nope"))
                .await
                .unwrap_err();
            assert!(
                matches!(err, ReplicationError::Auth { .. }),
                "{user}: {err}"
            );
            let mut ok = ReplicationClient::connect(&allowing(good))
                .await
                .unwrap_or_else(|e| panic!("{user}: {e}"));
            ok.identify_system().await.unwrap();
            allowing(good)
                .connect_sql()
                .await
                .unwrap_or_else(|e| panic!("{user}: {e}"))
                .simple_query("SELECT 1")
                .await
                .unwrap();
        }

        // The SQL connection takes the same config.
        let sql = config_as(&pg, "fig_scram", Some("correct horse"))
            .connect_sql()
            .await
            .unwrap();
        sql.simple_query("SELECT 1").await.unwrap();

        // A role without REPLICATION: refused, with the fix in the message.
        let err = ReplicationClient::connect(&config_as(&pg, "fig_norepl", Some("norepl")))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ReplicationError::ReplicationRefused { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("REPLICATION"), "{err}");
    });
}
