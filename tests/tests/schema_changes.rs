//! Schema changes against real servers, under both plugins: ADD COLUMN, DROP COLUMN, ALTER TYPE,
//! RENAME, a column dropped and added again under its name, an enum ADD VALUE, between and inside
//! transactions. Each change is recorded in the sink's schema-change history, never cast silently
//! (the mirror keeps old columns), and POSTed to a webhook served by the test on 127.0.0.1. The
//! `pause` policy stops the stream at a flagged change until it is accepted.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fig_tests::receiver::{assert_mirrors_match, Receiver, SinkFile};
use fig_tests::PgServer;

const TIMEOUT: Duration = Duration::from_secs(180);

/// A real HTTP server on 127.0.0.1 recording POSTed bodies; answers 200.
fn webhook() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/schema-changes", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&bodies);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            if let Some((_, body)) = read_message(&mut reader) {
                if let Ok(v) = serde_json::from_slice(&body) {
                    seen.lock().unwrap().push(v);
                }
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, bodies)
}

fn config(
    dir: &std::path::Path,
    name: &str,
    url: &str,
    plugin: &str,
    hook: &str,
    extra: &str,
) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let publication = if plugin == "pgoutput" {
        "publication = \"fig_pub\"\n"
    } else {
        ""
    };
    std::fs::write(
        &path,
        format!(
            "[source]\nurl = \"{url}\"\n[sink]\nurl = \"sqlite:{}\"\n\
             [replication]\nslot = \"{name}\"\nplugin = \"{plugin}\"\n{publication}\
             [notify]\nwebhook_url = \"{hook}\"\nwebhook_timeout_ms = 2000\n{extra}",
            dir.join(format!("{name}.sqlite")).display()
        ),
    )
    .unwrap();
    path
}

fn catch_up(config: &std::path::Path, extra: &[&str]) -> fig_tests::receiver::Finished {
    let mut r = Receiver::new(["run", "--endpos", "now", "--config"]).arg(config);
    for a in extra {
        r = r.arg(*a);
    }
    r.output(TIMEOUT)
}

/// (kinds of the changes, source) per row of `_fig_schema_changes` for `table`, in stream order.
fn recorded(sink: &std::path::Path, table: &str) -> Vec<Vec<String>> {
    let s = SinkFile::open(sink);
    let mut stmt = s
        .connection()
        .prepare(
            "SELECT changes FROM _fig_schema_changes WHERE \"table\" = ?1 \
             ORDER BY effective_lsn, effective_ordinal, id",
        )
        .unwrap();
    stmt.query_map([table], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|c| {
            let v: Vec<serde_json::Value> = serde_json::from_str(&c.unwrap()).unwrap();
            v.iter()
                .map(|x| {
                    let kind = x["kind"].as_str().unwrap().to_string();
                    let col = x["column"]
                        .as_str()
                        .or(x["to"].as_str())
                        .unwrap_or("")
                        .to_string();
                    format!("{kind}:{col}")
                })
                .collect()
        })
        .collect()
}

/// (source, DDL text) per row of `_fig_schema_changes` for `table`, in stream order.
fn explained(sink: &std::path::Path, table: &str) -> Vec<(String, Option<String>)> {
    let s = SinkFile::open(sink);
    let mut stmt = s
        .connection()
        .prepare(
            "SELECT source, ddl FROM _fig_schema_changes WHERE \"table\" = ?1 \
             ORDER BY effective_lsn, effective_ordinal, id",
        )
        .unwrap();
    stmt.query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn every_schema_change_is_recorded_and_notified_never_cast_under_both_plugins() {
    let pg = PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url("postgres");
    let (hook, bodies) = webhook();
    pg.psql(
        "CREATE EXTENSION figoutput;
         CREATE TYPE mood AS ENUM ('ok', 'sad');
         CREATE TABLE accounts (id int PRIMARY KEY, a text, b int, m mood, c numeric);
         CREATE PUBLICATION fig_pub FOR TABLE accounts;",
    );
    let plugins = ["figoutput", "pgoutput"];
    let configs: Vec<_> = plugins
        .iter()
        .map(|p| config(dir.path(), &format!("s_{p}"), &url, p, &hook, ""))
        .collect();
    for c in &configs {
        catch_up(c, &[]).assert_success(); // creates the slot
    }
    let steps = [
        "INSERT INTO accounts VALUES (1, 'x', 1, 'ok', 1.5)",
        // between transactions
        "ALTER TABLE accounts ADD COLUMN d text; INSERT INTO accounts (id, a, d) VALUES (2, 'y', 'new')",
        "ALTER TABLE accounts DROP COLUMN b; INSERT INTO accounts (id, a) VALUES (3, 'z')",
        "ALTER TABLE accounts ALTER COLUMN a TYPE varchar(40); INSERT INTO accounts (id, a) VALUES (4, 'w')",
        "ALTER TABLE accounts RENAME COLUMN a TO label; INSERT INTO accounts (id, label) VALUES (5, 'v')",
        // dropped and added again under its name (it moves to the end: attnums never come back)
        "ALTER TABLE accounts DROP COLUMN m; ALTER TABLE accounts ADD COLUMN m mood; INSERT INTO accounts (id, m) VALUES (6, 'sad')",
        // a new enum label changes no table
        "ALTER TYPE mood ADD VALUE 'meh'",
        "INSERT INTO accounts (id, m) VALUES (7, 'meh')",
        // inside one transaction: a change, the DDL, a change using the new column
        "BEGIN; INSERT INTO accounts (id) VALUES (8); ALTER TABLE accounts ADD COLUMN e int; INSERT INTO accounts (id, e) VALUES (9, 42); COMMIT",
        // Rows written before a change keep their old form in the mirror (never cast); rewritten,
        // they carry the new one.
        "UPDATE accounts SET id = id",
    ];
    for s in steps {
        pg.psql(s);
    }
    for c in &configs {
        catch_up(c, &[]).assert_success();
    }
    let expected: Vec<Vec<&str>> = vec![
        vec!["added:d"],
        vec!["dropped:b"],
        vec!["type_changed:a"],
        vec!["renamed:label"],
        vec!["dropped:m", "added:m"],
        vec!["added:e"],
    ];
    // A part of the statement behind each of them.
    let statements = [
        "ADD COLUMN d text",
        "DROP COLUMN b",
        "TYPE varchar(40)",
        "RENAME COLUMN a TO label",
        "ADD COLUMN m mood",
        "ADD COLUMN e int",
    ];
    let mut client = pg.connect();
    for p in plugins {
        let sink = dir.path().join(format!("s_{p}.sqlite"));
        assert_eq!(
            recorded(&sink, "accounts"),
            expected,
            "{p}: the schema-change history"
        );
        // Never cast: the mirror keeps the dropped and renamed columns' old values.
        let s = SinkFile::open(&sink);
        let b: Option<i64> = s
            .connection()
            .query_row(r#"SELECT b FROM "public.accounts" WHERE id = 1"#, [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(b, Some(1), "{p}: the dropped column keeps its old value");
        let a: Option<String> = s
            .connection()
            .query_row(r#"SELECT a FROM "public.accounts" WHERE id = 1"#, [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(
            a.as_deref(),
            Some("x"),
            "{p}: the renamed column's old name keeps its values"
        );
        assert_mirrors_match(&mut client, &sink, &["public.accounts"]);
        // figoutput's DDL capture gives each change the statement behind it; pgoutput has none.
        let texts = explained(&sink, "accounts");
        assert_eq!(texts.len(), statements.len(), "{p}: {texts:?}");
        for ((source, ddl), statement) in texts.iter().zip(statements) {
            match p {
                "figoutput" => {
                    assert_eq!(source, "ddl", "{p}: {texts:?}");
                    let ddl = ddl.as_deref().unwrap_or_default();
                    assert!(ddl.contains(statement), "{p}: {ddl:?} lacks {statement:?}");
                }
                _ => assert_eq!((source.as_str(), ddl), ("relation", &None), "{p}"),
            }
        }
    }
    // The webhook got every change of both receivers.
    // (Table-state documents go to the same webhook: a column added or retyped makes the table
    // wait for a re-copy, `docs/SYNC.md`; they are counted apart.)
    let schema_changes = || -> Vec<serde_json::Value> {
        bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b["event"] == "schema_change")
            .cloned()
            .collect()
    };
    let started = Instant::now();
    while schema_changes().len() < 2 * expected.len() && started.elapsed() < TIMEOUT {
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = schema_changes();
    assert_eq!(got.len(), 2 * expected.len(), "webhook documents: {got:#?}");
    assert!(
        bodies
            .lock()
            .unwrap()
            .iter()
            .any(|b| b["event"] == "table_copy_pending" && b["table"] == "accounts"),
        "the added and retyped columns made the table wait for a re-copy, notified"
    );
    for b in &got {
        assert_eq!(b["event"], "schema_change");
        assert_eq!(b["table"], "accounts");
        assert!(b["changes"].as_array().is_some_and(|c| !c.is_empty()));
    }
    assert!(got.iter().any(|b| b["flagged"] == true));
    assert_eq!(
        got.iter().filter(|b| b["ddl"].is_string()).count(),
        expected.len(),
        "the figoutput receiver's documents carry the DDL text"
    );
}

#[test]
fn the_pause_policy_stops_at_a_flagged_change_until_it_is_accepted() {
    let pg = PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url("postgres");
    let (hook, bodies) = webhook();
    pg.psql(
        "CREATE TABLE ledger (id int PRIMARY KEY, amount numeric, memo text);
         CREATE PUBLICATION fig_pub FOR TABLE ledger;",
    );
    let cfg = config(
        dir.path(),
        "paused",
        &url,
        "pgoutput",
        &hook,
        "[schema.tables]\n\"public.ledger\" = \"pause\"\n",
    );
    let sink = dir.path().join("paused.sqlite");
    catch_up(&cfg, &[]).assert_success();
    // An added column is not flagged: it flows.
    pg.psql("ALTER TABLE ledger ADD COLUMN note text; INSERT INTO ledger VALUES (1, 10, 'a', 'n')");
    catch_up(&cfg, &[]).assert_success();
    let before = SinkFile::open(&sink).checkpoint_lsn().unwrap();
    // A type change is: the receiver stops before the transaction that carries it.
    pg.psql("ALTER TABLE ledger ALTER COLUMN amount TYPE bigint; INSERT INTO ledger VALUES (2, 20, 'b', 'n')");
    let stopped = catch_up(&cfg, &[]);
    stopped.assert_failure();
    assert!(
        stopped
            .stderr
            .contains("--accept-schema-change public.ledger"),
        "the message says how to accept: {}",
        stopped.stderr
    );
    let s = SinkFile::open(&sink);
    assert_eq!(
        s.checkpoint_lsn(),
        Some(before),
        "nothing after the change is stored or acknowledged"
    );
    let rows: i64 = s
        .connection()
        .query_row(r#"SELECT count(*) FROM "public.ledger""#, [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
    drop(s);
    // Stopping again on a restart, until accepted.
    catch_up(&cfg, &[]).assert_failure();
    catch_up(&cfg, &["--accept-schema-change", "public.ledger"]).assert_success();
    // Row 1 still holds its numeric-era value (never cast) until the source rewrites it.
    pg.psql("UPDATE ledger SET memo = memo");
    catch_up(&cfg, &["--accept-schema-change", "public.ledger"]).assert_success();
    let mut client = pg.connect();
    assert_mirrors_match(&mut client, &sink, &["public.ledger"]);
    assert_eq!(
        recorded(&sink, "ledger"),
        vec![vec!["added:note"], vec!["type_changed:amount"]]
    );
    let started = Instant::now();
    while !bodies
        .lock()
        .unwrap()
        .iter()
        .any(|b| b["changes"][0]["kind"] == "type_changed")
        && started.elapsed() < TIMEOUT
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        bodies
            .lock()
            .unwrap()
            .iter()
            .any(|b| b["changes"][0]["kind"] == "type_changed"),
        "the paused change was notified"
    );
}

/// `GET /metrics` from the receiver's endpoint; `None` while it is not up.
fn scrape(addr: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let (head, body) = read_message(&mut BufReader::new(s))?;
    Some(head + &String::from_utf8(body).ok()?)
}

/// One HTTP message: its head (start line and headers) and its body, read by Content-Length (the
/// peer may keep the connection open after it). `None` if the connection ends first.
fn read_message(reader: &mut impl BufRead) -> Option<(String, Vec<u8>)> {
    let mut head = String::new();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some((head, body))
}

/// The value of the first sample of `name` whose labels contain every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn schema_changes_and_deliveries_are_counted_on_the_metrics_endpoint() {
    let pg = PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url("postgres");
    let (hook, _bodies) = webhook();
    pg.psql(
        "CREATE EXTENSION figoutput; CREATE TABLE ledger (id int PRIMARY KEY, amount numeric);",
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let cfg = config(
        dir.path(),
        "metered",
        &url,
        "figoutput",
        &hook,
        &format!("[metrics]\nlisten = \"{addr}\"\n"),
    );
    let mut running = Receiver::new(["run", "--config"]).arg(&cfg).spawn();
    // Streaming has begun (the initial copy is done) once the durable position is published.
    let started = Instant::now();
    let streaming = |addr: &str| {
        scrape(addr).is_some_and(|t| sample(&t, "fig_durable_lsn_bytes", &[]).is_some())
    };
    while !streaming(&addr) {
        running.assert_running();
        assert!(
            started.elapsed() < TIMEOUT,
            "the metrics endpoint never came up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    pg.psql("INSERT INTO ledger SELECT g, g FROM generate_series(1, 500) g");
    pg.psql("ALTER TABLE ledger ADD COLUMN memo text; INSERT INTO ledger VALUES (501, 1, 'x')");
    pg.psql("ALTER TABLE ledger DROP COLUMN amount; INSERT INTO ledger VALUES (502, 'y')");
    let started = Instant::now();
    let mut last = String::new();
    let done = |text: &str| {
        sample(text, "fig_rows_delivered_total", &[]).is_some_and(|v| v >= 502.0)
            && sample(text, "fig_schema_changes_total", &["kind=\"dropped\""]) == Some(1.0)
    };
    while started.elapsed() < TIMEOUT {
        running.assert_running();
        if let Some(text) = scrape(&addr) {
            last = text;
            if done(&last) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    running.terminate(TIMEOUT).assert_success();
    assert!(done(&last), "metrics never showed the work: {last}");
    assert_eq!(
        sample(
            &last,
            "fig_schema_changes_total",
            &["kind=\"added\"", "ledger"]
        ),
        Some(1.0),
        "{last}"
    );
    // The three inserts, and with figoutput the two DDL transactions (their DDL records).
    assert_eq!(
        sample(&last, "fig_transactions_delivered_total", &[]),
        Some(5.0),
        "{last}"
    );
    assert!(
        sample(&last, "fig_durable_lsn_bytes", &[]).is_some_and(|v| v > 0.0),
        "{last}"
    );
}
