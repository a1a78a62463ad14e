//! Values a finance user meets, exact in the mirror under both plugins, copied and streamed alike:
//! `money` as the exact decimal `money::numeric` gives (not the locale's text), declared
//! `DECIMAL_TEXT`, and summed exactly with the sqlite3 shell's `decimal_sum`.

use std::time::Duration;

use fig_tests::receiver::{SinkFile, Target};
use fig_tests::PgServer;

const TIMEOUT: Duration = Duration::from_secs(180);

type Row = (i32, Option<String>, Option<serde_json::Value>);

fn json(text: Option<String>) -> Option<serde_json::Value> {
    text.map(|t| serde_json::from_str(&t).unwrap())
}

/// (id, amount, amounts) of every row, as the source's `money::numeric` spells them.
fn source_rows(c: &mut postgres::Client) -> Vec<Row> {
    c.query(
        "SELECT id, amount::numeric::text,
                (SELECT json_agg(a::numeric::text ORDER BY o) FROM unnest(amounts) WITH ORDINALITY u(a, o))::text
         FROM ledger ORDER BY id",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), json(r.get(2))))
    .collect()
}

fn mirror_rows(sink: &SinkFile) -> Vec<Row> {
    let mut stmt = sink
        .connection()
        .prepare(r#"SELECT id, amount, amounts FROM "public.ledger" ORDER BY id"#)
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, json(r.get(2)?))))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows
}

#[test]
fn money_is_the_exact_decimal_in_the_mirror_copied_and_streamed_under_both_plugins() {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    pg.psql(
        "CREATE EXTENSION figoutput;
         CREATE TABLE ledger (id int PRIMARY KEY, amount money, amounts money[]);
         -- Copied: the extremes money holds, a negative below one unit, NULLs.
         INSERT INTO ledger VALUES
           (1, '92233720368547758.07', ARRAY['0.01', '-0.01']::money[]),
           (2, '-92233720368547758.08', NULL),
           (3, '-0.05', ARRAY[NULL, '1234.5']::money[]),
           (4, NULL, '{}');
         CREATE PUBLICATION fig_pub FOR ALL TABLES;",
    );
    let targets = [
        Target::new("figoutput", dir.path(), None),
        Target::new("pgoutput", dir.path(), Some("fig_pub")),
    ];
    for t in &targets {
        t.catch_up(&url, TIMEOUT);
    }
    // Streamed: inserts, an update, a delete.
    pg.psql(
        "INSERT INTO ledger VALUES (5, '1234567.89', ARRAY['12.34', '-56.78']::money[]), (6, '0', NULL);
         UPDATE ledger SET amount = amount + '0.01'::money WHERE id = 3;
         DELETE FROM ledger WHERE id = 4;",
    );
    for t in &targets {
        t.catch_up(&url, TIMEOUT);
    }
    let mut c = pg.connect();
    let want = source_rows(&mut c);
    assert_eq!(
        want[2].1.as_deref(),
        Some("-0.04"),
        "the source as expected"
    );
    for t in &targets {
        let sink = t.open();
        assert_eq!(mirror_rows(&sink), want, "{}: the mirror", t.plugin);
        let declared: String = sink
            .connection()
            .query_row(
                r#"SELECT type FROM pragma_table_info('public.ledger') WHERE name = 'amount'"#,
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(declared, "DECIMAL_TEXT", "{}", t.plugin);
        let history: String = sink
            .connection()
            .query_row(
                "SELECT json_extract(after, '$.amount') FROM _fig_changes WHERE json_extract(after, '$.id') = 5",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(history, "1234567.89", "{}: the history", t.plugin);
        // Summed exactly in the sqlite3 shell (its decimal functions), as docs/RECEIVER.md shows;
        // SQLite's own SUM would go through floating point.
        let shell = std::process::Command::new("sqlite3")
            .arg("-readonly")
            .arg(&t.sink)
            .arg(r#"SELECT decimal_sum(amount) FROM "public.ledger""#)
            .output()
            .expect("the sqlite3 shell (.ci/setup installs it)");
        assert!(
            shell.status.success(),
            "{}",
            String::from_utf8_lossy(&shell.stderr)
        );
        let exact: String = c
            .query_one("SELECT sum(amount::numeric)::text FROM ledger", &[])
            .unwrap()
            .get(0);
        assert_eq!(
            String::from_utf8_lossy(&shell.stdout).trim(),
            exact,
            "{}",
            t.plugin
        );
    }
}

/// Arrays keep lower bounds other than 1 (`'[0:2]={…}'`, several dimensions, negative, inner
/// arrays of an array of a domain over an array), copied and streamed, under both plugins; an
/// `int2vector`'s lower bound 0 is its type's and stays a plain array.
#[test]
fn array_lower_bounds_are_kept_copied_and_streamed_under_both_plugins() {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    pg.psql(
        r#"CREATE EXTENSION figoutput;
         CREATE DOMAIN intlist AS int[];
         CREATE TABLE bounds (id int PRIMARY KEY, a int[], t text[], l intlist[], v int2vector);
         INSERT INTO bounds VALUES
           (1, '[0:2]={1,2,3}', '[-2:-1][5:5]={{x},{"y,z"}}', '{"[0:1]={7,8}","{9}"}', '1 2'),
           (2, '{4,5}', '[1:1]={one}', '[3:3]={NULL}', ''),
           (3, '[-2147483648:-2147483647]={6,NULL}', '{}', NULL, NULL);
         CREATE PUBLICATION fig_pub FOR ALL TABLES;"#,
    );
    let targets = [
        Target::new("figoutput", dir.path(), None),
        Target::new("pgoutput", dir.path(), Some("fig_pub")),
    ];
    for t in &targets {
        t.catch_up(&url, TIMEOUT);
    }
    pg.psql(
        r#"INSERT INTO bounds VALUES (4, '[-1:0][0:1]={{1,2},{3,4}}', '[0:0]={s}', '[0:0]={"[5:5]={1}"}', '3');
         UPDATE bounds SET a = '[10:10]={10}' WHERE id = 2;
         UPDATE bounds SET a = '{1,2,3}' WHERE id = 1;"#,
    );
    for t in &targets {
        t.catch_up(&url, TIMEOUT);
        fig_tests::receiver::assert_mirrors_match(&mut pg.connect(), &t.sink, &["public.bounds"]);
        let stored = |id: i32, col: &str| -> String {
            t.open()
                .connection()
                .query_row(
                    &format!(r#"SELECT {col} FROM "public.bounds" WHERE id = ?1"#),
                    [id],
                    |r| r.get(0),
                )
                .unwrap()
        };
        // As docs/RECEIVER.md spells them.
        assert_eq!(
            stored(2, "a"),
            r#"{"lower_bounds":[10],"elements":[10]}"#,
            "{}",
            t.plugin
        );
        assert_eq!(stored(1, "a"), "[1,2,3]", "{}", t.plugin);
        assert_eq!(
            stored(4, "a"),
            r#"{"lower_bounds":[-1,0],"elements":[[1,2],[3,4]]}"#,
            "{}",
            t.plugin
        );
        assert_eq!(
            stored(1, "v"),
            "[1,2]",
            "{}: a vector stays plain",
            t.plugin
        );
    }
}
