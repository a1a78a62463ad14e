//! The harness against real servers: what every other integration test relies on.

use std::path::PathBuf;
use std::sync::mpsc;

use fig_tests::{process, reap_stale_clusters, HarnessError, Owner, PgServer, StopMode};

/// A base dir of the test's own, so that reaping and leftovers can be checked in isolation.
struct OwnBaseDir(PathBuf);

impl OwnBaseDir {
    fn new(name: &str) -> OwnBaseDir {
        let dir = std::env::temp_dir().join(format!("fig-pg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        OwnBaseDir(dir)
    }

    fn entries(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.0)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

impl Drop for OwnBaseDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A pid that belonged to a process that has exited (and been waited for).
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

fn count(pg: &PgServer, sql: &str) -> String {
    pg.psql(sql).trim().to_owned()
}

#[test]
fn two_servers_started_in_parallel_get_different_ports_and_both_answer() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(PgServer::start);
        let b = s.spawn(PgServer::start);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());
    for pg in [&a, &b] {
        let row = pg
            .connect()
            .query_one("SELECT inet_server_port()", &[])
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), i32::from(pg.port()));
        assert_eq!(pg.psql("SELECT 1"), "1\n");
    }
}

#[test]
fn the_server_is_configured_for_logical_decoding_tests() {
    let pg = PgServer::start();
    assert_eq!(count(&pg, "SHOW wal_level"), "logical");
    assert!(
        count(&pg, "SHOW max_replication_slots")
            .parse::<u32>()
            .unwrap()
            >= 20
    );
    assert!(count(&pg, "SHOW max_wal_senders").parse::<u32>().unwrap() >= 20);
    assert_eq!(count(&pg, "SHOW fsync"), "off");
    assert_eq!(count(&pg, "SHOW listen_addresses"), "127.0.0.1");
    assert_eq!(
        count(&pg, "SHOW unix_socket_directories"),
        pg.socket_dir().to_str().unwrap()
    );
    assert_eq!(
        count(&pg, "SHOW server_version_num"),
        pg.server_version_num().to_string()
    );
    assert!(pg.log_path().starts_with(pg.cluster_dir()));
    assert!(pg
        .log_contents()
        .contains("database system is ready to accept connections"));
}

#[test]
fn logical_slots_with_pgoutput_and_test_decoding_can_be_created_and_read() {
    let pg = PgServer::start();
    pg.psql(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         CREATE PUBLICATION p FOR TABLE t;
         SELECT 1 FROM pg_create_logical_replication_slot('po', 'pgoutput');
         SELECT 1 FROM pg_create_logical_replication_slot('td', 'test_decoding');
         INSERT INTO t VALUES (1, 'one');",
    );
    let decoded = pg.psql("SELECT data FROM pg_logical_slot_get_changes('td', NULL, NULL)");
    assert!(
        decoded.contains("table public.t: INSERT: id[integer]:1 v[text]:'one'"),
        "{decoded}"
    );
    // pgoutput: Begin, Relation, Insert, Commit.
    let messages = pg.psql(
        "SELECT count(*) FROM pg_logical_slot_get_binary_changes('po', NULL, NULL,
             'proto_version', '1', 'publication_names', 'p')",
    );
    assert_eq!(messages.trim(), "4");
}

#[test]
fn output_plugin_libraries_allows_figoutput_and_wal2json_where_the_server_has_it() {
    let pg = PgServer::start();
    let known = count(
        &pg,
        "SELECT count(*) FROM pg_settings WHERE name = 'output_plugin_libraries'",
    ) == "1";
    assert_eq!(known, pg.knows_output_plugin_libraries());
    if pg.server_version_num() == 150020 {
        assert!(
            known,
            "15.20 has output_plugin_libraries; the harness failed to detect it"
        );
    }
    if !known {
        eprintln!(
            "server {} does not know output_plugin_libraries; nothing to check",
            pg.server_version_num()
        );
        return;
    }
    let libraries = count(&pg, "SHOW output_plugin_libraries");
    let names: Vec<&str> = libraries.split(',').map(str::trim).collect();
    for name in ["pgoutput", "test_decoding", "figoutput", "wal2json"] {
        assert!(names.contains(&name), "{name} missing from {libraries}");
    }
    // Proof that the list is honoured, not just displayed: wal2json decodes (where it is installed).
    if pg.bin_dir().join("../lib/wal2json.so").is_file() {
        pg.psql(
            "CREATE TABLE t (id int PRIMARY KEY);
             SELECT 1 FROM pg_create_logical_replication_slot('w', 'wal2json');
             INSERT INTO t VALUES (7);",
        );
        let json = pg.psql(
            "SELECT data FROM pg_logical_slot_get_changes('w', NULL, NULL, 'format-version', '2')",
        );
        assert!(
            json.contains(r#""action":"I""#) && json.contains(r#""value":7"#),
            "{json}"
        );
    }
}

#[test]
fn dropping_the_server_stops_its_postmaster_and_removes_its_dir() {
    let pg = PgServer::start();
    let pid = pg.postmaster_pid().unwrap();
    let dir = pg.cluster_dir().to_owned();
    let socket = dir.join(format!(".s.PGSQL.{}", pg.port()));
    assert!(process::is_alive(pid) && socket.exists());
    drop(pg);
    assert!(!process::is_alive(pid), "postmaster {pid} still runs");
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[test]
fn the_server_of_a_panicking_test_thread_is_stopped_and_removed() {
    let (tx, rx) = mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let pg = PgServer::start();
        tx.send((pg.postmaster_pid().unwrap(), pg.cluster_dir().to_owned()))
            .unwrap();
        panic!("a test failing while it owns a server (expected by this test)");
    })
    .join();
    assert!(outcome.is_err(), "the thread should have panicked");
    let (pid, dir) = rx.recv().unwrap();
    assert!(
        !process::is_alive(pid),
        "postmaster {pid} survived the panic"
    );
    assert!(!dir.exists(), "{} survived the panic", dir.display());
}

fn committed_data_survives(stop: impl FnOnce(&mut PgServer)) -> PgServer {
    let mut pg = PgServer::start();
    pg.psql("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1000);");
    let (port, pid) = (pg.port(), pg.postmaster_pid().unwrap());
    stop(&mut pg);
    assert!(!process::is_alive(pid));
    assert_eq!(pg.port(), port);
    assert_ne!(pg.postmaster_pid(), Some(pid));
    assert_eq!(count(&pg, "SELECT count(*) FROM t"), "1000");
    pg
}

#[test]
fn restart_fast_keeps_committed_data() {
    committed_data_survives(|pg| pg.restart(StopMode::Fast));
}

#[test]
fn restart_immediate_keeps_committed_data_through_crash_recovery() {
    let pg = committed_data_survives(|pg| pg.restart(StopMode::Immediate));
    assert!(
        pg.log_contents().contains("automatic recovery in progress"),
        "{}",
        pg.log_contents()
    );
}

#[test]
fn a_killed_postmaster_restarts_with_its_committed_data() {
    committed_data_survives(|pg| {
        pg.kill9_postmaster();
        assert!(!pg.is_running());
        pg.restart(StopMode::Fast);
    });
}

#[test]
fn a_stopped_server_starts_again_on_restart() {
    let mut pg = PgServer::start();
    pg.stop();
    assert!(!pg.is_running());
    assert!(pg.try_psql("SELECT 1").is_err());
    pg.restart(StopMode::Fast);
    assert_eq!(count(&pg, "SELECT 1"), "1");
}

#[test]
fn clusters_of_dead_test_processes_are_reaped_at_the_next_start() {
    let base = OwnBaseDir::new("reap");
    let orphan = PgServer::builder().base_dir(&base.0).start();
    let alive = PgServer::builder().base_dir(&base.0).start();
    let orphan_pid = orphan.postmaster_pid().unwrap();
    let orphan_dir = orphan.cluster_dir().to_owned();
    // As if the test process owning `orphan` had been killed with SIGKILL: its owner is gone.
    Owner::write(
        &orphan_dir,
        Owner {
            pid: dead_pid(),
            start_time: None,
        },
    )
    .unwrap();

    let next = PgServer::builder().base_dir(&base.0).start();

    assert!(
        !process::is_alive(orphan_pid),
        "stale postmaster {orphan_pid} still runs"
    );
    assert!(
        !orphan_dir.exists(),
        "stale cluster {} still exists",
        orphan_dir.display()
    );
    for pg in [&alive, &next] {
        assert!(pg.is_running() && pg.cluster_dir().exists());
        assert_eq!(count(pg, "SELECT 1"), "1");
    }
    assert_eq!(
        reap_stale_clusters(&base.0),
        Vec::<PathBuf>::new(),
        "live clusters must be left alone"
    );
    // The orphan's own drop finds its server and dir gone and does not mind.
    drop(orphan);
}

/// Set when this test binary runs a copy of itself to play a test process that ends abnormally.
const ROLE_ENV: &str = "FIG_HARNESS_TEST_ROLE";

/// Does nothing in a normal run. In a copy started by the tests below it starts a server, prints
/// `SERVER <postmaster pid> <cluster dir>`, and then either leaks the server (as a `static` would)
/// and exits normally, or waits to be killed with SIGKILL.
#[test]
fn child_process_role() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let pg = PgServer::start();
    println!(
        "SERVER {} {}",
        pg.postmaster_pid().unwrap(),
        pg.cluster_dir().display()
    );
    std::io::Write::flush(&mut std::io::stdout()).unwrap();
    match role.as_str() {
        "leak" => std::mem::forget(pg),
        "wait-for-sigkill" => std::thread::sleep(std::time::Duration::from_secs(600)),
        other => panic!("unknown role {other}"),
    }
}

/// Runs this test binary as a child in `role`; returns it and the server it reported.
fn child_with_server(role: &str, base: &OwnBaseDir) -> (std::process::Child, u32, PathBuf) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_role",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_ENV, role)
        .env(fig_tests::BASE_DIR_ENV, &base.0)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    while let Some(line) = lines.next() {
        let line = line.unwrap();
        // libtest may print `test child_process_role ... ` on the same line first.
        if let Some((_, rest)) = line.split_once("SERVER ") {
            let (pid, dir) = rest.split_once(' ').unwrap();
            // Keep reading: a closed pipe would make the child's next println fail its run.
            std::thread::spawn(move || lines.for_each(drop));
            return (child, pid.parse().unwrap(), PathBuf::from(dir));
        }
    }
    panic!(
        "the child test process reported no server: {:?}",
        child.wait()
    );
}

#[test]
fn a_server_never_dropped_is_stopped_when_the_test_process_exits() {
    let base = OwnBaseDir::new("leak");
    let (mut child, pid, dir) = child_with_server("leak", &base);
    assert!(child.wait().unwrap().success());
    assert!(
        !process::is_alive(pid),
        "leaked postmaster {pid} outlived its test process"
    );
    assert!(!dir.exists(), "{} outlived its test process", dir.display());
}

#[test]
fn the_server_of_a_sigkilled_test_process_is_reaped_at_the_next_start() {
    let base = OwnBaseDir::new("sigkill");
    let (mut child, pid, dir) = child_with_server("wait-for-sigkill", &base);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        process::is_alive(pid) && dir.exists(),
        "nothing left to reap: the test proves nothing"
    );

    let _next = PgServer::builder().base_dir(&base.0).start();

    assert!(!process::is_alive(pid), "stale postmaster {pid} still runs");
    assert!(
        !dir.exists(),
        "stale cluster {} still exists",
        dir.display()
    );
}

#[test]
fn a_reused_owner_pid_does_not_keep_a_stale_cluster() {
    let base = OwnBaseDir::new("reuse");
    let orphan = PgServer::builder().base_dir(&base.0).start();
    let dir = orphan.cluster_dir().to_owned();
    // Our own (live) pid, but with another start time: a different process than the owner.
    let me = std::process::id();
    let start_time = process::start_time(me).unwrap();
    Owner::write(
        &dir,
        Owner {
            pid: me,
            start_time: Some(start_time + 1),
        },
    )
    .unwrap();
    assert_eq!(reap_stale_clusters(&base.0), vec![dir.clone()]);
    assert!(!orphan.is_running());
}

#[test]
fn settings_encoding_and_locale_reach_the_cluster() {
    let pg = PgServer::builder()
        .setting("logical_decoding_work_mem", "64kB")
        .encoding("LATIN1")
        .locale("C")
        .start();
    assert_eq!(count(&pg, "SHOW logical_decoding_work_mem"), "64kB");
    assert_eq!(count(&pg, "SHOW server_encoding"), "LATIN1");
    assert_eq!(count(&pg, "SHOW lc_collate"), "C");
    pg.create_database("latin");
    // psql speaks UTF-8 with us and LATIN1 with the database: 'é' is one byte there.
    let row = pg.psql_in(
        "latin",
        "SELECT 'é', octet_length('é'), current_setting('server_encoding')",
    );
    assert_eq!(row, "é|1|LATIN1\n");
}

#[test]
fn psql_stops_at_the_first_error_and_reports_it() {
    let pg = PgServer::start();
    let err = pg
        .try_psql("CREATE TABLE a (); SELECT 1/0; CREATE TABLE b ();")
        .unwrap_err();
    assert!(matches!(err, HarnessError::CommandFailed { .. }));
    assert!(err.to_string().contains("division by zero"), "{err}");
    assert_eq!(
        count(
            &pg,
            "SELECT string_agg(relname, ',') FROM pg_class WHERE relname IN ('a', 'b')"
        ),
        "a"
    );
}

#[test]
fn the_unix_socket_and_the_url_both_reach_the_server() {
    let pg = PgServer::start();
    pg.create_database("other");
    let mut by_socket = postgres::Config::new()
        .host_path(pg.socket_dir())
        .port(pg.port())
        .user("postgres")
        .dbname("other")
        .connect(postgres::NoTls)
        .unwrap();
    let db: String = by_socket
        .query_one("SELECT current_database()", &[])
        .unwrap()
        .get(0);
    assert_eq!(db, "other");
    assert_eq!(
        pg.url("other"),
        format!(
            "postgres://postgres@127.0.0.1:{}/other?sslmode=disable",
            pg.port()
        )
    );
    let mut by_url = postgres::Client::connect(&pg.url("other"), postgres::NoTls).unwrap();
    assert_eq!(
        by_url.query_one("SELECT 1", &[]).unwrap().get::<_, i32>(0),
        1
    );
}

#[tokio::test]
async fn the_harness_works_inside_an_async_test() {
    // The receiver's tests are async; the harness's own queries must not start a runtime in theirs.
    let pg = PgServer::start();
    pg.create_database("async_db");
    assert_eq!(
        pg.psql_in("async_db", "SELECT current_database()"),
        "async_db\n"
    );
    assert!(pg.server_version_num() >= 100000);
}

#[test]
fn a_failed_start_shows_the_server_log_and_leaves_nothing_behind() {
    let base = OwnBaseDir::new("fail");
    let err = PgServer::builder()
        .base_dir(&base.0)
        .setting("no_such_setting", "1")
        .try_start()
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("unrecognized configuration parameter \"no_such_setting\""),
        "{message}"
    );
    assert!(
        base.entries().is_empty(),
        "left behind: {:?}",
        base.entries()
    );
}

#[test]
fn a_bin_dir_without_the_server_is_refused_with_advice() {
    let err = PgServer::builder()
        .bin_dir("/nonexistent/bin")
        .try_start()
        .unwrap_err();
    assert!(matches!(
        err,
        HarnessError::BinDirIncomplete {
            missing: "initdb",
            ..
        }
    ));
    assert!(err.to_string().contains("FIG_PG_BIN"));
}

#[test]
fn setting_names_cannot_inject_config_lines() {
    let err = PgServer::builder()
        .setting("fsync = on\nwal_level", "minimal")
        .try_start()
        .unwrap_err();
    assert!(matches!(err, HarnessError::InvalidSetting { .. }), "{err}");
}
