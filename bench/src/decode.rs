//! Server-side decode cost of one large transaction: every plugin decodes the same WAL through
//! `pg_logical_slot_peek_binary_changes` (nothing is consumed, so each plugin sees identical input),
//! in rotating order, `repeat` times; the median wall time and the bytes per row are reported with
//! ratios to pgoutput (protocol 1). Streaming of in-progress transactions is off for the main rows
//! so every plugin replays the transaction the same way; two extra rows show figoutput and pgoutput 2
//! with streaming on, which avoids the reorder buffer's spill to disk for transactions larger than
//! `logical_decoding_work_mem` (set with `--work-mem`: the default 64MB spills a 1M-row transaction,
//! so spill I/O common to all plugins then dominates; 2GB keeps it in memory and shows plugin cost).

use crate::report::median;
use crate::workload::{ledger_insert, LEDGER_DDL};
use fig_tests::PgServer;
use std::time::Instant;

struct Plugin {
    label: &'static str,
    slot: &'static str,
    plugin: &'static str,
    options: &'static str,
}

const PLUGINS: &[Plugin] = &[
    Plugin {
        label: "pgoutput (proto 1)",
        slot: "b_pgoutput",
        plugin: "pgoutput",
        options: ", 'proto_version', '1', 'publication_names', 'bench'",
    },
    Plugin {
        label: "pgoutput (proto 2)",
        slot: "b_pgoutput",
        plugin: "pgoutput",
        options: ", 'proto_version', '2', 'publication_names', 'bench'",
    },
    Plugin {
        label: "figoutput",
        slot: "b_figoutput",
        plugin: "figoutput",
        options: ", 'format_version', '1', 'streaming', 'false'",
    },
    Plugin {
        label: "pgoutput (proto 2, streaming)",
        slot: "b_pgoutput",
        plugin: "pgoutput",
        options: ", 'proto_version', '2', 'publication_names', 'bench', 'streaming', 'on'",
    },
    Plugin {
        label: "figoutput (streaming)",
        slot: "b_figoutput",
        plugin: "figoutput",
        options: ", 'format_version', '1', 'streaming', 'true'",
    },
    Plugin {
        label: "test_decoding",
        slot: "b_test_decoding",
        plugin: "test_decoding",
        options: "",
    },
    Plugin {
        label: "wal2json (format 2)",
        slot: "b_wal2json",
        plugin: "wal2json",
        options: ", 'format-version', '2'",
    },
];

pub fn run(rows: u64, repeat: usize, work_mem: &str) {
    let pg = PgServer::builder()
        .setting("max_wal_size", "4GB")
        .setting("logical_decoding_work_mem", work_mem)
        .start();
    let mut db = pg.connect();
    let version = pg.psql("SHOW server_version");
    db.batch_execute(&format!(
        "{LEDGER_DDL}; CREATE PUBLICATION bench FOR TABLE ledger; CREATE EXTENSION figoutput;"
    ))
    .expect("setting up the benchmark database");
    let mut slots: Vec<&str> = PLUGINS.iter().map(|p| p.slot).collect();
    slots.dedup();
    for p in PLUGINS.iter().filter(|p| slots.contains(&p.slot)) {
        if db
            .query_opt(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
                &[&p.slot],
            )
            .unwrap()
            .is_none()
        {
            db.execute(
                "SELECT pg_create_logical_replication_slot($1, $2)",
                &[&p.slot, &p.plugin],
            )
            .unwrap_or_else(|e| panic!("creating a {} slot: {e}", p.plugin));
        }
    }
    eprintln!(
        "fig-bench decode: inserting {rows} ledger rows in one transaction (PostgreSQL {})",
        version.trim()
    );
    db.batch_execute(&ledger_insert(rows)).expect("workload");

    let mut times: Vec<Vec<f64>> = vec![Vec::new(); PLUGINS.len()];
    let mut bytes: Vec<i64> = vec![0; PLUGINS.len()];
    for round in 0..repeat {
        for k in 0..PLUGINS.len() {
            let i = (k + round) % PLUGINS.len();
            let p = &PLUGINS[i];
            let sql = format!(
                "SELECT count(*), coalesce(sum(octet_length(data)), 0)::bigint
                 FROM pg_logical_slot_peek_binary_changes('{}', NULL, NULL{})",
                p.slot, p.options
            );
            let t = Instant::now();
            let row = db
                .query_one(&sql, &[])
                .unwrap_or_else(|e| panic!("decoding with {}: {e}", p.label));
            times[i].push(t.elapsed().as_secs_f64());
            bytes[i] = row.get::<_, i64>(1);
            eprintln!(
                "  round {}: {:<22} {:>7.2} s",
                round + 1,
                p.label,
                t.elapsed().as_secs_f64()
            );
        }
    }

    let base_t = median(&times[0]);
    let base_b = bytes[0] as f64 / rows as f64;
    println!(
        "\nServer-side decode of one {rows}-row ledger transaction, median of {repeat}, logical_decoding_work_mem = {work_mem} (PostgreSQL {}):\n",
        version.trim()
    );
    println!(
        "| plugin | decode wall (s) | bytes per row | time vs pgoutput 1 | bytes vs pgoutput 1 |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (i, p) in PLUGINS.iter().enumerate() {
        let t = median(&times[i]);
        let b = bytes[i] as f64 / rows as f64;
        println!(
            "| {} | {:.2} | {:.1} | {:.2}× | {:.2}× |",
            p.label,
            t,
            b,
            t / base_t,
            b / base_b
        );
    }
}
