//! The README's first command: a throwaway PostgreSQL with figoutput, the sample financial workload,
//! fig-receiver streaming it into a SQLite file, and a short report of what landed there.
//!
//! `fig-demo [PATH]` (default `fig-demo.sqlite` in the current directory; an existing file is replaced).

use fig_receiver::config::{Config, Overrides};
use fig_receiver::run::{self, EndPos};
use fig_tests::PgServer;
use std::path::PathBuf;

const SCHEMA: &str = include_str!("../../sql/sample_schema.sql");
const WORKLOAD: &str = include_str!("../../sql/sample_workload.sql");

fn main() {
    if let Err(e) = demo() {
        eprintln!("fig-demo: {e}");
        std::process::exit(1);
    }
}

type AnyError = Box<dyn std::error::Error + Send + Sync>;

fn demo() -> Result<(), AnyError> {
    let path = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fig-demo.sqlite".into()),
    );
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    eprintln!("== starting a throwaway PostgreSQL");
    let pg = PgServer::start();
    pg.psql("CREATE EXTENSION figoutput");
    pg.psql(SCHEMA);
    let config = Config::load(
        None,
        &Overrides {
            source: Some(pg.url("postgres")),
            sink: Some(format!("sqlite:{}", path.display())),
            slot: Some("demo".into()),
            ..Default::default()
        },
    )?;
    let runtime = tokio::runtime::Runtime::new()?;
    let receive = |what: &str| -> Result<run::Summary, AnyError> {
        eprintln!("== fig-receiver run --endpos now   ({what})");
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        Ok(runtime.block_on(run::run(&config, Some(EndPos::Now), stopped))?)
    };
    // The first run creates the slot; changes from then on are captured.
    receive("creates the slot and the sink")?;
    eprintln!("== running the sample financial workload");
    pg.psql(WORKLOAD);
    let summary = receive("streams the workload")?;

    let db = rusqlite::Connection::open(&path)?;
    println!(
        "\n{} transactions, {} row changes landed in {}",
        summary.transactions,
        summary.rows,
        path.display()
    );
    println!("\n{:<28} {:>6} {:>8}", "mirror table", "rows", "changes");
    let mut tables = db.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '%.%' ORDER BY name",
    )?;
    let names: Vec<String> = tables
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for name in &names {
        let rows: i64 = db.query_row(
            &format!("SELECT count(*) FROM \"{}\"", name.replace('"', "\"\"")),
            [],
            |r| r.get(0),
        )?;
        let (schema, table) = name.split_once('.').unwrap_or(("", name));
        let changes: i64 = db.query_row(
            "SELECT count(*) FROM _fig_changes WHERE schema = ?1 AND \"table\" = ?2",
            [schema, table],
            |r| r.get(0),
        )?;
        println!("{name:<28} {rows:>6} {changes:>8}");
    }
    println!("\ninvoices (SELECT number, amount, currency, status FROM \"public.invoices\"):");
    let mut q = db.prepare(
        "SELECT number, amount, currency, status FROM \"public.invoices\" ORDER BY number",
    )?;
    let rows = q.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    for row in rows {
        let (n, a, c, s) = row?;
        println!("  {n}  {a:>12} {c}  {s}");
    }
    println!("\nlast changes (_fig_changes):");
    let mut q = db.prepare(
        "SELECT printf('%X/%X', commit_lsn >> 32, commit_lsn & 4294967295), ordinal, op, schema || '.' || \"table\", commit_time
         FROM _fig_changes ORDER BY commit_lsn DESC, ordinal DESC LIMIT 5",
    )?;
    let rows = q.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
        ))
    })?;
    for row in rows {
        let (lsn, ord, op, table, at) = row?;
        println!("  {lsn:>10} #{ord:<3} {op:<8} {table:<24} {at}");
    }
    let checkpoint: String =
        db.query_row("SELECT commit_end_lsn_text FROM _fig_checkpoint", [], |r| {
            r.get(0)
        })?;
    println!("\ncheckpoint: durable up to {checkpoint}; open the file with any SQLite tool, e.g. sqlite3 {}", path.display());
    Ok(())
}
