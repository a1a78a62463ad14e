//! Source names the SQLite sink cannot hold as they are (DESIGN.md rule 8): two tables whose mirror
//! names are one for SQLite (a dot inside a name, `sqlite_` escaped, ASCII case), columns whose names
//! differ only in case. Each such table is marked out of sync with the reason, before anything of it
//! is written, and the other tables are copied and streamed. Also: figoutput's own DDL log, which a
//! publication `FOR ALL TABLES` includes, is neither copied nor streamed.

use std::time::Duration;

use fig_tests::receiver::{assert_mirrors_match, table_states, Target};
use fig_tests::PgServer;

const TIMEOUT: Duration = Duration::from_secs(180);

/// `(schema.table, state, reason)` of every table not in sync.
fn states(target: &Target) -> Vec<(String, String, String)> {
    let file = target.open();
    let mut stmt = file
        .connection()
        .prepare("SELECT schema || '.' || \"table\", state, reason FROM _fig_tables ORDER BY 1")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    rows.map(Result::unwrap).collect()
}

fn count(target: &Target, mirror: &str) -> i64 {
    target
        .open()
        .connection()
        .query_row(&format!("SELECT count(*) FROM \"{mirror}\""), [], |r| {
            r.get(0)
        })
        .unwrap_or_else(|e| panic!("mirror {mirror}: {e}"))
}

#[test]
fn tables_sharing_a_mirror_name_are_refused_at_the_copy_and_in_the_stream_the_others_go_on() {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    pg.psql(
        r#"CREATE EXTENSION figoutput;
           CREATE SCHEMA "public.a";
           CREATE TABLE "public.a".b (id int PRIMARY KEY, v text);
           CREATE TABLE public."a.b" (id int PRIMARY KEY, v text);
           CREATE SCHEMA sqlite_x;
           CREATE TABLE sqlite_x.t (id int PRIMARY KEY, v text);
           CREATE SCHEMA "_sqlite_x";
           CREATE TABLE "_sqlite_x".t (id int PRIMARY KEY, v text);
           CREATE TABLE ok (id int PRIMARY KEY, v text);
           INSERT INTO "public.a".b SELECT i, 'sa' || i FROM generate_series(1, 5) i;
           INSERT INTO public."a.b" SELECT i, 'pa' || i FROM generate_series(1, 7) i;
           INSERT INTO sqlite_x.t SELECT i, 'x' || i FROM generate_series(1, 3) i;
           INSERT INTO "_sqlite_x".t SELECT i, 'y' || i FROM generate_series(1, 4) i;
           INSERT INTO ok SELECT i, 'o' || i FROM generate_series(1, 10) i;"#,
    );
    let target = Target::new("figoutput", dir.path(), None);
    let done = target.catch_up(&url, TIMEOUT);
    let refused = states(&target);
    assert_eq!(
        refused.len(),
        2,
        "one table of each pair:\n{refused:?}\n{}",
        done.stderr
    );
    for (name, state, reason) in &refused {
        assert_eq!(state, "out_of_sync", "{name}: {reason}");
        assert!(
            reason.contains("would both be mirrored"),
            "{name}: {reason}"
        );
    }
    let dotted = refused
        .iter()
        .find(|(n, ..)| n == "public.a.b")
        .expect("one of the dotted pair is refused");
    assert!(
        dotted.2.contains(r#""public.a".b"#) && dotted.2.contains(r#"public."a.b""#),
        "the reason names both tables unambiguously: {}",
        dotted.2
    );
    let escaped = refused
        .iter()
        .find(|(n, ..)| n == "sqlite_x.t" || n == "_sqlite_x.t")
        .expect("one of the sqlite_ pair is refused");
    assert!(
        escaped.2.contains("sqlite_x.t") && escaped.2.contains("_sqlite_x.t"),
        "{}",
        escaped.2
    );
    // The mirror of each pair holds one table's rows, never a mix.
    let a_b = count(&target, "public.a.b");
    assert!(a_b == 5 || a_b == 7, "{a_b}");
    let x = count(&target, "_sqlite_x.t");
    assert!(x == 3 || x == 4, "{x}");
    assert!(
        !done.stderr.contains("free disk space") && !done.stderr.contains("pipeline bug"),
        "{}",
        done.stderr
    );

    // Streaming: the refused tables stay out of sync, their mirror's owner and the others stream.
    pg.psql(
        r#"INSERT INTO "public.a".b VALUES (100, 'new');
           INSERT INTO public."a.b" VALUES (100, 'new');
           INSERT INTO ok VALUES (100, 'new');
           CREATE TABLE public."x.y" (id int PRIMARY KEY);
           CREATE SCHEMA "public.x";
           CREATE TABLE "public.x".y (id int PRIMARY KEY);
           INSERT INTO public."x.y" VALUES (1);
           INSERT INTO "public.x".y VALUES (1), (2);"#,
    );
    target.catch_up(&url, TIMEOUT);
    let mut client = pg.connect();
    assert_mirrors_match(&mut client, &target.sink, &["public.ok"]);
    assert_eq!(count(&target, "public.a.b"), a_b + 1);
    let after = states(&target);
    // The first to arrive is mirrored (waiting for its copy, as any table created since), the
    // second refused.
    let new_pair: Vec<_> = after
        .iter()
        .filter(|(n, s, _)| n == "public.x.y" && s == "out_of_sync")
        .collect();
    assert_eq!(new_pair.len(), 1, "{after:?}");
    assert!(
        new_pair[0].2.contains(r#"public."x.y""#) && new_pair[0].2.contains(r#""public.x".y"#),
        "{after:?}"
    );
}

#[test]
fn columns_differing_only_in_case_stop_their_table_only_at_the_copy_and_when_added_later() {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    pg.psql(
        r#"CREATE EXTENSION figoutput;
           CREATE TABLE dupcase (id int PRIMARY KEY, "ID" int);
           CREATE TABLE qc (id int PRIMARY KEY, "sp ace" int);
           CREATE TABLE ok (id int PRIMARY KEY, v text);
           INSERT INTO dupcase VALUES (1, 1);
           INSERT INTO qc VALUES (1, 1);
           INSERT INTO ok SELECT i, 'o' || i FROM generate_series(1, 10) i;"#,
    );
    let target = Target::new("figoutput", dir.path(), None);
    let done = target.catch_up(&url, TIMEOUT);
    let refused = states(&target);
    assert_eq!(refused.len(), 1, "{refused:?}\n{}", done.stderr);
    assert_eq!(
        (refused[0].0.as_str(), refused[0].1.as_str()),
        ("public.dupcase", "out_of_sync")
    );
    assert!(
        refused[0].2.contains("differ only in ASCII case") && refused[0].2.contains(r#""ID""#),
        "{refused:?}"
    );
    assert!(!done.stderr.contains("free disk space"), "{}", done.stderr);
    let mut client = pg.connect();
    assert_mirrors_match(&mut client, &target.sink, &["public.ok", "public.qc"]);

    // A column SQLite cannot tell from one the mirror has, added later: out of sync, said so.
    pg.psql(
        r#"ALTER TABLE qc ADD COLUMN "SP ACE" int;
           INSERT INTO qc VALUES (2, 20, 21);
           INSERT INTO ok VALUES (11, 'new');"#,
    );
    let done = target.catch_up(&url, TIMEOUT);
    assert_mirrors_match(&mut client, &target.sink, &["public.ok"]);
    let after = states(&target);
    let qc: Vec<_> = after.iter().filter(|(n, ..)| n == "public.qc").collect();
    assert_eq!(qc.len(), 1, "{after:?}\n{}", done.stderr);
    assert_eq!(qc[0].1, "out_of_sync", "{after:?}");
    assert!(
        qc[0].2.contains("differ only in ASCII case") && qc[0].2.contains(r#""SP ACE""#),
        "{after:?}"
    );
    assert!(!done.stderr.contains("free disk space"), "{}", done.stderr);
}

#[test]
fn figoutputs_ddl_log_is_neither_copied_nor_streamed_under_a_publication_for_all_tables() {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    pg.psql(
        "CREATE EXTENSION figoutput;
         CREATE TABLE ok (id int PRIMARY KEY, v text);
         INSERT INTO ok VALUES (1, 'a');
         CREATE PUBLICATION pub FOR ALL TABLES;",
    );
    let target = Target::new("pgoutput", dir.path(), Some("pub"));
    target.catch_up(&url, TIMEOUT);
    // DDL writes a row into figoutput.ddl_log (and deletes it at once): pgoutput sends both.
    pg.psql(
        "ALTER TABLE ok ADD COLUMN w int;
         CREATE TABLE later (id int PRIMARY KEY);
         INSERT INTO ok VALUES (2, 'b', 2);",
    );
    target.catch_up(&url, TIMEOUT);
    target.catch_up(&url, TIMEOUT);
    let states = table_states(&target.sink);
    assert!(
        !states.iter().any(|s| s.starts_with("figoutput.")),
        "{states:?}"
    );
    let mirrors: i64 = target
        .open()
        .connection()
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name LIKE 'figoutput.%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(mirrors, 0, "no mirror of figoutput's own tables");
    let history: i64 = target
        .open()
        .connection()
        .query_row(
            "SELECT count(*) FROM _fig_changes WHERE schema = 'figoutput'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(history, 0, "no history of figoutput's own tables");
}
