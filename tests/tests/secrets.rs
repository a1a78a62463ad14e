//! Secrets never leave the places they are given: recognisable passwords and tokens are run
//! through the failure paths a user meets (`--help` with the source in the environment, a
//! misspelled key in the config file, a password that breaks the URL, a wrong password against a
//! real server, a webhook that cannot be reached, DDL sent together with `ALTER ROLE … PASSWORD`,
//! a user mapping's password), and every output and the sink file are searched for them.

use std::path::Path;
use std::time::Duration;

use fig_tests::receiver::{Finished, Receiver, Target};
use fig_tests::PgServer;

const TIMEOUT: Duration = Duration::from_secs(120);

fn assert_absent(what: &str, text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "{what} shows the secret {s:?}:\n{text}");
    }
}

fn outputs(f: &Finished) -> String {
    format!("{}\n{}", f.stdout, f.stderr)
}

/// The bytes of every file of a SQLite sink (the database and its WAL), lossily as text.
fn sink_bytes(sink: &Path) -> String {
    let mut all = String::new();
    for suffix in ["", "-wal"] {
        let mut p = sink.as_os_str().to_owned();
        p.push(suffix);
        if let Ok(b) = std::fs::read(&p) {
            all.push_str(&String::from_utf8_lossy(&b));
        }
    }
    all
}

#[test]
fn passwords_and_tokens_never_appear_in_output_or_in_the_sink() {
    let pg = PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = pg.url("postgres");
    let port = pg.port();

    // --help with the source in the environment.
    let help = Receiver::new(["run", "--help"])
        .env("FIG_SOURCE", "postgres://fig:Pw-SECRET-1@127.0.0.1/db")
        .output(TIMEOUT);
    assert_absent("--help", &outputs(&help), &["SECRET-1"]);
    assert!(help.stdout.contains("FIG_SOURCE"), "{}", help.stdout);

    // A misspelled key and an unquoted value in the config file.
    for (i, body) in ["pasword = \"Pw-SECRET-2\"", "password = Pw-SECRET-2"]
        .iter()
        .enumerate()
    {
        let cfg = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(
            &cfg,
            format!("[source]\nurl = \"postgres://fig@127.0.0.1:{port}/postgres?sslmode=disable\"\n{body}\n"),
        )
        .unwrap();
        let out = Receiver::new(["run", "--config"]).arg(&cfg).output(TIMEOUT);
        out.assert_failure();
        assert_absent("a config error", &outputs(&out), &["SECRET-2"]);
        assert!(out.stderr.contains("line 3"), "{}", out.stderr);
    }

    // A password with an unencoded '/' or '?', and an unquoted key=value password with a space.
    for source in [
        format!("postgres://fig:Pw/SECRET-3@127.0.0.1:{port}/postgres"),
        format!("postgres://fig:Pw?SECRET-3@127.0.0.1:{port}/postgres"),
        format!("host=127.0.0.1 port={port} user=fig password=Pw SECRET-3"),
    ] {
        let out = Receiver::new(["check", "--source", &source, "--sink"])
            .arg(format!("sqlite:{}", dir.path().join("x.sqlite").display()))
            .arg("--slot")
            .arg("s")
            .plugin("pgoutput")
            .publication("p")
            .output(TIMEOUT);
        out.assert_failure();
        assert_absent("a malformed source", &outputs(&out), &["SECRET-3", "Pw"]);
    }

    // A wrong password against a server that asks for one.
    pg.psql("CREATE ROLE fig LOGIN REPLICATION PASSWORD 'right-one';");
    pg.write_pg_hba(
        "local all postgres trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\nhost replication all 127.0.0.1/32 scram-sha-256\n",
    );
    let wrong = format!("postgres://fig:Pw-SECRET-4@127.0.0.1:{port}/postgres?sslmode=disable");
    let out = Receiver::new(["run", "--source", &wrong, "--sink"])
        .arg(format!("sqlite:{}", dir.path().join("y.sqlite").display()))
        .arg("--slot")
        .arg("s")
        .plugin("pgoutput")
        .publication("p")
        .endpos("now")
        .output(TIMEOUT);
    out.assert_failure();
    assert_absent("a refused password", &outputs(&out), &["SECRET-4"]);

    // DDL sent in one query string with ALTER ROLE … PASSWORD, a user mapping's password, and a
    // webhook (its path a token) that cannot be reached, under figoutput.
    pg.psql(
        "CREATE EXTENSION figoutput;
         CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t VALUES (1, 'a');
         CREATE FOREIGN DATA WRAPPER dummy;
         CREATE SERVER srv FOREIGN DATA WRAPPER dummy;",
    );
    let target = Target::new("figoutput", dir.path(), None);
    let cfg = dir.path().join("hook.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nurl = \"{url}\"\n[sink]\nurl = \"sqlite:{}\"\n[replication]\nslot = \"{}\"\nplugin = \"figoutput\"\n\
             [notify]\nwebhook_url = \"http://127.0.0.1:1/hook-SECRET-5\"\nwebhook_attempts = 2\nwebhook_timeout_ms = 500\n",
            target.sink.display(),
            target.slot
        ),
    )
    .unwrap();
    let run = || Receiver::new(["run", "--config"]).arg(&cfg).endpos("now");
    let first = run().output(TIMEOUT);
    first.assert_success();
    let mut c = pg.connect();
    c.batch_execute("ALTER TABLE t ADD COLUMN c int; ALTER ROLE fig PASSWORD 'Pw-SECRET-6'")
        .unwrap();
    c.batch_execute("CREATE USER MAPPING FOR postgres SERVER srv OPTIONS (password 'Pw-SECRET-7')")
        .unwrap();
    c.batch_execute("ALTER TABLE t ADD COLUMN d int").unwrap();
    c.batch_execute("INSERT INTO t VALUES (2, 'b', 3, 4)")
        .unwrap();
    let second = run().output(TIMEOUT);
    second.assert_success();
    let secrets = ["SECRET-5", "SECRET-6", "SECRET-7"];
    assert_absent("run with DDL and a webhook", &outputs(&second), &secrets);
    assert_absent("the sink", &sink_bytes(&target.sink), &secrets);
    assert!(
        second.stderr.contains("http://127.0.0.1:1/"),
        "the webhook is still named by its host:\n{}",
        second.stderr
    );
    // The text is kept where it is safe: a statement sent alone.
    let ddl: Vec<String> = target
        .open()
        .connection()
        .prepare("SELECT ddl FROM _fig_schema_changes WHERE ddl IS NOT NULL ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        ddl,
        // Both explain the one definition the next change brought, oldest first.
        ["ALTER TABLE public.t\nALTER TABLE t ADD COLUMN d int"],
        "the statement sent with ALTER ROLE is named by its command and table only"
    );
    let log = pg.log_contents();
    assert_absent("the server log", &log, &["SECRET-5"]);
}
