//! Re-copies into a JSON Lines file (DESIGN.md rule 8): `fig-receiver resync` beside a running
//! receiver and without one, and a table that joins the publication while `run` streams. A reader
//! that replays the file as docs/RECEIVER.md says (a load replaces the table, changes apply in file
//! order) must rebuild every table equal to its source, and each re-copy must sit exactly at its
//! stream position: the table's changes above it committed before its position, those below at
//! or after it. The real binary, a real PostgreSQL 15, both plugins.

use std::path::Path;
use std::time::Duration;

use fig_tests::app::AppWriter;
use fig_tests::jsonl::{source_rows, Replica};
use fig_tests::receiver::{current_flush_lsn, lsn_text, Receiver, Running};
use fig_tests::PgServer;

const TIMEOUT: Duration = Duration::from_secs(240);

const SCHEMA: &str =
    "CREATE TABLE ledger (id bigint PRIMARY KEY, amount numeric(20,4) NOT NULL, memo text);
     INSERT INTO ledger SELECT i, i * 0.0001, repeat('m', i % 50) FROM generate_series(1, 50000) i;
     CREATE TABLE tape (k int, v text);
     ALTER TABLE tape REPLICA IDENTITY FULL;
     INSERT INTO tape SELECT i % 100, 'v' || i FROM generate_series(1, 5000) i;
     CREATE PUBLICATION fig_pub FOR ALL TABLES;";

const LEDGER: &str = "SELECT id, amount::text AS amount, memo FROM ledger";
const TAPE: &str = "SELECT k, v FROM tape";

/// Updates, deletes and inserts on both tables, one transaction per call.
fn workload(n: u64) -> String {
    let i = n as i64;
    let id = (i * 7919) % 50_000 + 1;
    format!(
        "BEGIN;
         UPDATE ledger SET amount = amount + 1, memo = 'u{i}' WHERE id = {id};
         DELETE FROM ledger WHERE id = {};
         INSERT INTO ledger VALUES ({}, {i}, 'new') ON CONFLICT (id) DO UPDATE SET memo = 'again';
         DELETE FROM tape WHERE ctid = (SELECT ctid FROM tape WHERE k = {} LIMIT 1);
         INSERT INTO tape VALUES ({i} % 100, 'w{i}');
         UPDATE tape SET v = v || '+' WHERE ctid = (SELECT ctid FROM tape WHERE k = {} LIMIT 1);
         COMMIT;",
        (id + 1) % 50_000 + 1,
        50_000 + i,
        i % 100,
        (i + 50) % 100
    )
}

fn config(dir: &Path, url: &str, plugin: &str, file: &Path) -> std::path::PathBuf {
    let path = dir.join(format!("{plugin}.toml"));
    std::fs::write(
        &path,
        format!(
            "[source]\nurl = \"{url}\"\n[sink]\nurl = \"jsonl:{}\"\n[replication]\nslot = \"fig_{plugin}\"\nplugin = \"{plugin}\"\npublication = \"fig_pub\"\n[resync]\nscan_secs = 1\n",
            file.display()
        ),
    )
    .unwrap();
    path
}

fn with_config(args: &[&str], config: &Path) -> Receiver {
    let mut r = Receiver::new(args.iter().copied());
    r = r.arg("--config").arg(config);
    r
}

/// Waits until the file's sidecar holds a checkpoint at or past `lsn`, while `daemon` runs.
fn wait_for(file: &Path, lsn: u64, daemon: &mut Running) {
    let sidecar = file.with_extension("jsonl.checkpoint");
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let at = std::fs::read_to_string(&sidecar)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| {
                v["checkpoint"]["commit_end_lsn"]
                    .as_str()
                    .map(str::to_owned)
            })
            .map(|t| fig_tests::receiver::parse_lsn(&t));
        if at.is_some_and(|a| a >= lsn) {
            return;
        }
        daemon.assert_running();
        assert!(
            std::time::Instant::now() < deadline,
            "the JSON Lines checkpoint did not reach {}:\n{}",
            lsn_text(lsn),
            daemon.stderr_so_far()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Each re-copy of `table` is at its position: the table's change lines before it committed before
/// the position, those after it at or after it.
fn assert_placed(file: &Path, table: &str) -> usize {
    let text = std::fs::read_to_string(file).unwrap();
    let mut recopies = 0;
    let mut lines: Vec<serde_json::Value> = Vec::new();
    for l in text.lines() {
        lines.push(serde_json::from_str(l).unwrap());
    }
    let name = |v: &serde_json::Value| {
        format!(
            "{}.{}",
            v["schema"].as_str().unwrap_or(""),
            v["table"].as_str().unwrap_or("")
        )
    };
    for (i, v) in lines.iter().enumerate() {
        if v["event"] != "load_start" || v["sync"] != "resync" || name(v) != table {
            continue;
        }
        recopies += 1;
        let at = fig_tests::receiver::parse_lsn(v["position"].as_str().expect("a position"));
        for (j, w) in lines.iter().enumerate() {
            let Some(commit) = w["commit_lsn"].as_str() else {
                continue;
            };
            if name(w) != table || w["op"] == "read" {
                continue;
            }
            let commit = fig_tests::receiver::parse_lsn(commit);
            if j < i {
                assert!(
                    commit < at,
                    "line {}: a change committed at {} is above the re-copy at {}",
                    j + 1,
                    lsn_text(commit),
                    lsn_text(at)
                );
            } else {
                assert!(
                    commit >= at,
                    "line {}: a change committed at {} is below the re-copy at {}",
                    j + 1,
                    lsn_text(commit),
                    lsn_text(at)
                );
            }
        }
    }
    recopies
}

const KEYS: &[(&str, &[&str])] = &[("public.ledger", &["id"]), ("public.later", &["id"])];

fn assert_rebuilds(client: &mut postgres::Client, file: &Path, tables: &[(&str, &str)]) -> Replica {
    let replica = Replica::read(file, KEYS);
    for (table, query) in tables {
        let source = source_rows(client, query);
        let rebuilt = replica.sorted(table);
        assert_eq!(
            rebuilt.len(),
            source.len(),
            "{table}: rows rebuilt from the file vs the source"
        );
        assert!(
            rebuilt == source,
            "{table}: the rows rebuilt from the file differ from the source"
        );
    }
    replica
}

#[test]
fn resync_beside_a_running_receiver_lands_at_its_position_and_the_file_rebuilds_the_source() {
    for plugin in ["pgoutput", "figoutput"] {
        let pg = PgServer::start();
        let url = pg.url("postgres");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.jsonl");
        pg.psql(SCHEMA);
        if plugin == "figoutput" {
            pg.psql("CREATE EXTENSION figoutput;");
        }
        let cfg = config(dir.path(), &url, plugin, &file);
        let mut daemon = with_config(&["run"], &cfg).spawn();
        // Streaming (its initial copy in) before the resync is asked for.
        wait_for(&file, 0, &mut daemon);
        let writer = AppWriter::start(pg.connect(), Duration::from_millis(2), workload);
        std::thread::sleep(Duration::from_secs(1));
        let done = with_config(&["resync"], &cfg)
            .arg("public.ledger")
            .arg("public.tape")
            .output(TIMEOUT);
        // A table created while streaming joins the publication (FOR ALL TABLES): copied by itself.
        pg.psql("CREATE TABLE later (id int PRIMARY KEY, v text); INSERT INTO later SELECT i, 'l' || i FROM generate_series(1, 3000) i;");
        std::thread::sleep(Duration::from_secs(3));
        pg.psql(
            "UPDATE later SET v = 'changed' WHERE id % 7 = 0; DELETE FROM later WHERE id % 11 = 0;",
        );
        let writes = writer.stop();
        done.assert_success();
        assert!(
            !done.stderr.contains("streaming here"),
            "{plugin}: the running receiver writes the file; the command must not start a second writer:\n{}",
            done.stderr
        );
        assert!(
            writes > 10,
            "{plugin}: the workload ran during the resync ({writes} transactions)"
        );
        let mut client = pg.connect();
        let end = current_flush_lsn(&mut client);
        wait_for(&file, end, &mut daemon);
        // The later table's copy lands within a few scans.
        let deadline = std::time::Instant::now() + TIMEOUT;
        while !Replica::read(&file, KEYS)
            .loads
            .iter()
            .any(|(t, s, _)| t == "public.later" && s == "resync")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "{plugin}: public.later was never copied:\n{}",
                daemon.stderr_so_far()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        let end = current_flush_lsn(&mut client);
        wait_for(&file, end, &mut daemon);
        daemon.terminate(TIMEOUT).assert_success();
        let replica = assert_rebuilds(
            &mut client,
            &file,
            &[
                ("public.ledger", LEDGER),
                ("public.tape", TAPE),
                ("public.later", "SELECT id, v FROM later"),
            ],
        );
        assert_eq!(
            assert_placed(&file, "public.ledger"),
            1,
            "{plugin}: one re-copy of ledger"
        );
        assert_eq!(
            assert_placed(&file, "public.tape"),
            1,
            "{plugin}: one re-copy of tape"
        );
        assert_eq!(
            assert_placed(&file, "public.later"),
            1,
            "{plugin}: one copy of the later table"
        );
        assert!(
            replica
                .loads
                .iter()
                .filter(|(_, s, _)| s == "cdc-initial")
                .count()
                == 2,
            "{plugin}: the initial copy of ledger and tape: {:?}",
            replica.loads
        );
        assert!(
            !file.with_extension("jsonl.resync").exists()
                || std::fs::read_to_string(file.with_extension("jsonl.resync"))
                    .unwrap()
                    .trim()
                    .is_empty(),
            "{plugin}: served requests are taken off"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".recopy-"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "{plugin}: staging files left: {leftovers:?}"
        );
    }
}

#[test]
fn resync_without_a_running_receiver_streams_until_its_copy_is_in() {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.jsonl");
    pg.psql(SCHEMA);
    let cfg = config(dir.path(), &url, "pgoutput", &file);
    with_config(&["run", "--endpos", "now"], &cfg)
        .output(TIMEOUT)
        .assert_success();
    // Changes the file does not have yet, then the resync with nothing running.
    for n in 1..=200 {
        pg.psql(&workload(n));
    }
    let done = with_config(&["resync", "public.ledger"], &cfg).output(TIMEOUT);
    done.assert_success();
    assert!(done.stderr.contains("streaming here"), "{}", done.stderr);
    // What is left of the stream, then the comparison.
    with_config(&["run", "--endpos", "now"], &cfg)
        .output(TIMEOUT)
        .assert_success();
    let mut client = pg.connect();
    assert_rebuilds(
        &mut client,
        &file,
        &[("public.ledger", LEDGER), ("public.tape", TAPE)],
    );
    assert_eq!(assert_placed(&file, "public.ledger"), 1);
    // Into stdout there is no file to hold a request: a clear refusal.
    let refused = Receiver::new([
        "resync",
        "--source",
        &url,
        "--sink",
        "jsonl:-",
        "--slot",
        "fig_pgoutput",
        "public.ledger",
    ])
    .output(TIMEOUT);
    refused.assert_failure();
    assert!(
        refused.stderr.contains("not possible"),
        "{}",
        refused.stderr
    );
}
