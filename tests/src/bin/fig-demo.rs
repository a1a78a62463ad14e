//! The README's first command (until fig-receiver streams into SQLite): a throwaway PostgreSQL, the
//! sample financial workload, and every change figoutput decoded from the slot, printed readably.

use fig_format::datetime::format_timestamp;
use fig_format::decode::{Record, Relation};
use fig_tests::figoutput::Decoded;
use fig_tests::PgServer;
use std::collections::HashMap;

const SCHEMA: &str = include_str!("../../sql/sample_schema.sql");
const WORKLOAD: &str = include_str!("../../sql/sample_workload.sql");

fn main() {
    eprintln!("starting a throwaway PostgreSQL ...");
    let pg = PgServer::start();
    let mut c = pg.connect();
    c.batch_execute("CREATE EXTENSION figoutput")
        .expect("CREATE EXTENSION figoutput");
    c.execute(
        "SELECT pg_create_logical_replication_slot('demo', 'figoutput')",
        &[],
    )
    .expect("creating the slot");
    eprintln!(
        "PostgreSQL {} on {}; slot \"demo\" uses figoutput",
        pg.psql("SHOW server_version").trim(),
        pg.url("postgres")
    );
    c.batch_execute(SCHEMA).expect("sample schema");
    pg.psql(WORKLOAD);

    let decoded = Decoded::get(&mut c, "demo", &[("format_version", "1")]);
    let mut rels: HashMap<u32, Relation<'static>> = HashMap::new();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (rec, kind) in decoded.records.iter().zip(decoded.kinds()) {
        *counts.entry(kind).or_default() += 1;
        match rec {
            Record::Begin {
                xid, commit_time, ..
            } => {
                println!(
                    "BEGIN xid {xid}, committed {}",
                    format_timestamp(*commit_time, true)
                )
            }
            Record::Commit { end_lsn, .. } => {
                println!("COMMIT (confirm up to {})\n", lsn(*end_lsn))
            }
            Record::Relation(r) => {
                let cols: Vec<String> = r
                    .columns
                    .iter()
                    .map(|c| {
                        format!(
                            "{} {}{}",
                            c.name,
                            c.type_name,
                            if c.flags.key() { " key" } else { "" }
                        )
                    })
                    .collect();
                println!("  RELATION {}.{} ({})", r.schema, r.table, cols.join(", "));
                rels.insert(r.relid, r.clone());
            }
            Record::Insert { relid, new, .. } => println!("  INSERT {}", row(&rels, *relid, new)),
            Record::Update { relid, new, .. } => println!("  UPDATE {}", row(&rels, *relid, new)),
            Record::Delete { relid, old, .. } => {
                println!(
                    "  DELETE {}",
                    old.as_ref()
                        .map_or("(no old key)".into(), |o| row(&rels, *relid, &o.values))
                )
            }
            Record::Truncate { relids, .. } => println!("  TRUNCATE {relids:?}"),
            Record::Ddl { payload, .. } => {
                let tag = payload
                    .split("\"tag\": \"")
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .unwrap_or("?");
                println!("  DDL {tag}")
            }
            other => println!("  {other:?}"),
        }
    }
    let mut summary: Vec<_> = counts.into_iter().collect();
    summary.sort();
    println!(
        "records decoded: {}",
        summary
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

fn lsn(l: u64) -> String {
    format!("{:X}/{:X}", l >> 32, l & 0xffff_ffff)
}

fn row(
    rels: &HashMap<u32, Relation<'static>>,
    relid: u32,
    tuple: &[fig_format::decode::Raw<'static>],
) -> String {
    let Some(rel) = rels.get(&relid) else {
        return format!("relation {relid} (not described)");
    };
    let values = rel
        .values(tuple.to_vec())
        .expect("values match their RELATION");
    let fields: Vec<String> = rel
        .columns
        .iter()
        .zip(&values)
        .map(|(c, v)| format!("{}={v}", c.name))
        .collect();
    format!("{}.{} {}", rel.schema, rel.table, fields.join(" "))
}
