//! `status` and `check` only read: run beside a live receiver in the middle of a large copy into a
//! JSON Lines file, again and again, they change nothing of it (it once cut the file under its
//! writer), and pointed at a sink that does not exist they create nothing.

use std::time::{Duration, Instant};

use fig_tests::receiver::Receiver;
use fig_tests::PgServer;

const TIMEOUT: Duration = Duration::from_secs(240);
const ROWS: i64 = 1_000_000;

fn inspect(cmd: &str, url: &str, sink: &str) -> fig_tests::receiver::Finished {
    Receiver::new([
        cmd, "--source", url, "--sink", sink, "--slot", "fig", "--plugin", "pgoutput",
    ])
    .arg("--publication")
    .arg("fig_pub")
    .output(TIMEOUT)
}

#[test]
fn status_and_check_beside_a_live_json_lines_copy_change_nothing_and_create_nothing() {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    pg.psql(&format!(
        "CREATE TABLE big (id bigint PRIMARY KEY, v text NOT NULL);
         INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, {ROWS}) g;
         CREATE PUBLICATION fig_pub FOR ALL TABLES;"
    ));
    let file = dir.path().join("out.jsonl");
    let sink = format!("jsonl:{}", file.display());
    let mut live = Receiver::new(["run", "--source", &url, "--sink", &sink, "--slot", "fig"])
        .plugin("pgoutput")
        .publication("fig_pub")
        .endpos("now")
        .spawn();
    // Inspected while the copy writes (and after), as often as it takes.
    let deadline = Instant::now() + TIMEOUT;
    let mut during = 0;
    let finished = loop {
        if let Some(done) = live.wait_timeout(Duration::from_millis(1)) {
            break done;
        }
        assert!(Instant::now() < deadline, "the run did not end");
        if file.exists() {
            inspect("status", &url, &sink).assert_success();
            inspect("check", &url, &sink);
            during += 1;
        }
    };
    finished.assert_success();
    assert!(
        during >= 2,
        "status ran only {during} times during the copy"
    );

    let bytes = std::fs::read(&file).unwrap();
    assert!(
        !bytes.contains(&0),
        "NUL bytes in the file: it was cut under its writer"
    );
    let text = String::from_utf8(bytes).unwrap();
    let mut rows = 0i64;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a line that is not JSON ({e}): {line:.200}"));
        if v.get("event").is_none() {
            rows += 1;
        }
    }
    assert_eq!(rows, ROWS, "every row of the copy, once");
    let sidecar: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out.jsonl.checkpoint")).unwrap(),
    )
    .unwrap();
    assert_eq!(sidecar["data_len"].as_u64(), Some(text.len() as u64));
    let status = inspect("status", &url, &sink);
    status.assert_success();
    assert!(status.stdout.contains("durable up to"), "{}", status.stdout);

    // A mistyped path: reported, nothing created.
    for missing in ["sqlite:", "jsonl:"] {
        let path = dir
            .path()
            .join(format!("no-such-{}", &missing[..missing.len() - 1]));
        let target = format!("{missing}{}", path.display());
        let out = inspect("status", &url, &target);
        out.assert_success();
        assert!(out.stdout.contains("no file at"), "{}", out.stdout);
        inspect("check", &url, &target);
        assert!(!path.exists(), "{target}: status or check created it");
    }
}
