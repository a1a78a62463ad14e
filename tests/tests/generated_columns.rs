//! Generated columns (`[replication] include_generated`): off by default, so both plugins and the
//! copy leave them out alike; on, figoutput streams stored generated columns and the copy takes
//! them too, so the mirror equals the source column for column; pgoutput, which sends them only
//! from PostgreSQL 18 and only when the publication publishes them, is refused with the fix.

use std::path::Path;
use std::time::Duration;

use fig_tests::receiver::{assert_mirrors_match, Receiver, Target};
use fig_tests::PgServer;

const TIMEOUT: Duration = Duration::from_secs(180);

fn config(dir: &Path, url: &str, target: &Target, include_generated: bool) -> std::path::PathBuf {
    let path = dir.join(format!("{}-{include_generated}.toml", target.plugin));
    target.config_file(
        &path,
        url,
        &format!("include_generated = {include_generated}"),
        "",
    )
}

fn mirror_columns(target: &Target) -> Vec<String> {
    let sink = target.open();
    let mut stmt = sink
        .connection()
        .prepare("SELECT name FROM pragma_table_info('public.orders') ORDER BY cid")
        .unwrap();
    let names = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    names
}

#[test]
fn generated_columns_are_left_out_by_default_and_copied_and_streamed_with_include_generated() {
    let pg = PgServer::start();
    let url = pg.url("postgres");
    let dir = tempfile::tempdir().unwrap();
    pg.psql(
        "CREATE EXTENSION figoutput;
         CREATE TABLE orders (id int PRIMARY KEY, qty int NOT NULL, price numeric(12,2) NOT NULL,
                              total numeric GENERATED ALWAYS AS (qty * price) STORED);
         INSERT INTO orders (id, qty, price) SELECT g, g, 1.25 FROM generate_series(1, 100) g;
         CREATE PUBLICATION fig_pub FOR ALL TABLES;",
    );
    let with = Target {
        slot: "fig_generated".into(),
        sink: dir.path().join("with.sqlite"),
        ..Target::new("figoutput", dir.path(), None)
    };
    let without = [
        Target::new("figoutput", dir.path(), None),
        Target::new("pgoutput", dir.path(), Some("fig_pub")),
    ];
    let run = |t: &Target, on: bool| {
        Receiver::new(["run", "--config"])
            .arg(config(dir.path(), &url, t, on))
            .endpos("now")
            .output(TIMEOUT)
    };
    for t in &without {
        run(t, false).assert_success();
    }
    run(&with, true).assert_success();
    pg.psql(
        "INSERT INTO orders (id, qty, price) VALUES (101, 3, 9.99);
         UPDATE orders SET qty = qty + 1 WHERE id <= 10;
         DELETE FROM orders WHERE id = 50;",
    );
    for t in &without {
        run(t, false).assert_success();
        assert_eq!(mirror_columns(t), ["id", "qty", "price"], "{}", t.plugin);
    }
    run(&with, true).assert_success();
    assert_eq!(mirror_columns(&with), ["id", "qty", "price", "total"]);
    // Every column of every row, generated ones included, equals the source.
    assert_mirrors_match(&mut pg.connect(), &with.sink, &["public.orders"]);
    let total: String = with
        .open()
        .connection()
        .query_row(
            r#"SELECT total FROM "public.orders" WHERE id = 101"#,
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(total, "29.97");

    // pgoutput before PostgreSQL 18 cannot send them: refused at start, with the fix.
    let refused = Target {
        slot: "fig_generated_pg".into(),
        sink: dir.path().join("refused.sqlite"),
        ..Target::new("pgoutput", dir.path(), Some("fig_pub"))
    };
    let done = run(&refused, true);
    done.assert_failure();
    assert!(
        done.stderr.contains("publish_generated_columns = stored"),
        "{}",
        done.stderr
    );
}
