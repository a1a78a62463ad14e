//! Workloads this project did not write, against real servers, with faults: PostgreSQL's own
//! pgbench (its `-i` drops, recreates and bulk-loads its tables with COPY, adds the keys last, and
//! its TPC-B-like run updates three tables and appends to a keyless history). The receiver is
//! started first, pgbench initialises while the initial copy runs, the receiver is killed with
//! SIGKILL in the middle of the run and started again; at the end every table must equal its
//! mirror, row for row (multisets for the keyless history).

use std::process::Command;
use std::time::{Duration, Instant};

use fig_tests::receiver::{assert_mirrors_match, wait_until_in_sync, Target};
use fig_tests::PgServer;

const TIMEOUT: Duration = Duration::from_secs(240);
const TABLES: [&str; 4] = [
    "public.pgbench_accounts",
    "public.pgbench_branches",
    "public.pgbench_tellers",
    "public.pgbench_history",
];

fn pgbench(pg: &PgServer, args: &[&str]) -> std::process::Output {
    let bin = pg.bin_dir().join("pgbench");
    let bin = if bin.exists() { bin } else { "pgbench".into() };
    let out = Command::new(bin)
        .args([
            "-h",
            pg.host(),
            "-p",
            &pg.port().to_string(),
            "-U",
            "postgres",
        ])
        .args(args)
        .arg("postgres")
        .output()
        .expect("running pgbench");
    assert!(
        out.status.success(),
        "pgbench {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn pgbench_initialised_during_the_copy_and_killed_mid_run(plugin: &'static str) {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    if plugin == "figoutput" {
        pg.psql("CREATE EXTENSION figoutput;");
    }
    pgbench(&pg, &["-i", "-s", "2", "-q"]);
    let publication = (plugin == "pgoutput").then_some("fig_pub");
    if publication.is_some() {
        pg.psql("CREATE PUBLICATION fig_pub FOR ALL TABLES;");
    }
    let target = Target::new(plugin, dir.path(), publication);
    let mut daemon = target.receiver(&url).spawn();
    // pgbench -i again as the copy starts: DROP, CREATE, COPY, VACUUM, primary keys, all while
    // the initial copy holds (or wants) its locks.
    let slot_seen = Instant::now() + TIMEOUT;
    while pg
        .psql(&format!(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{}'",
            target.slot
        ))
        .trim()
        != "1"
    {
        assert!(
            Instant::now() < slot_seen,
            "no slot:\n{}",
            daemon.stderr_so_far()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    pgbench(&pg, &["-i", "-s", "2", "-q"]);
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "pgbench -i waited {:?} for the receiver's locks",
        started.elapsed()
    );
    // The TPC-B-like run, with the receiver killed in the middle and started again.
    let run = std::thread::spawn({
        let (host, port) = (pg.host().to_string(), pg.port());
        let bin = pg.bin_dir().join("pgbench");
        move || {
            let bin = if bin.exists() { bin } else { "pgbench".into() };
            let out = Command::new(bin)
                .args(["-h", &host, "-p", &port.to_string(), "-U", "postgres"])
                .args(["-c", "2", "-T", "8", "-n", "postgres"])
                .output()
                .expect("running pgbench");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    daemon.kill9();
    let mut daemon = target.receiver(&url).spawn();
    run.join().unwrap();
    wait_until_in_sync(&mut pg.connect(), &target.sink, TIMEOUT, || {
        daemon.stderr_so_far()
    });
    daemon.terminate(TIMEOUT).assert_success();
    let mut client = pg.connect();
    assert_mirrors_match(&mut client, &target.sink, &TABLES);
    let history: i64 = client
        .query_one("SELECT count(*) FROM pgbench_history", &[])
        .unwrap()
        .get(0);
    assert!(history > 100, "the run wrote its history ({history} rows)");
}

#[test]
fn pgbench_with_pgoutput_initialised_during_the_copy_and_killed_mid_run_equals_the_source() {
    pgbench_initialised_during_the_copy_and_killed_mid_run("pgoutput");
}

#[test]
fn pgbench_with_figoutput_initialised_during_the_copy_and_killed_mid_run_equals_the_source() {
    pgbench_initialised_during_the_copy_and_killed_mid_run("figoutput");
}
