//! `fig-receiver snapshot` beside `psql -c "COPY t TO STDOUT (FORMAT binary)" > /dev/null` on the
//! same table of the same server, in one run: rows per second of a full copy into JSON Lines (to
//! /dev/null through stdout) and into SQLite, single stream and with CTID chunks in parallel.
//!
//! ```text
//! setup   N ledger rows (1M-row transactions), VACUUM ANALYZE, one COPY to warm the cache
//! round   each case in rotating order, after a server CHECKPOINT and sync(2): wall time of the
//!         whole command (connect to exit)
//!         COPY binary > /dev/null                      the baseline: the server's COPY alone
//!         snapshot → jsonl:- > /dev/null, parallel 1 | 2
//!         snapshot → sqlite:new file,     parallel 1 | 2
//! report  medians; rows/s and the ratio to COPY
//! ```

use crate::binary::{receiver_binary, remove_sqlite, settle, wall};
use crate::report::{median, verdict};
use crate::workload::fill_ledger;
use fig_tests::PgServer;
use std::process::{Command, Stdio};

pub struct Options {
    pub rows: u64,
    pub repeat: usize,
    /// Connections of the parallel cases.
    pub parallel: u64,
}

#[derive(Clone, Copy)]
enum Case {
    Copy,
    Receiver { sink: Sink, parallel: bool },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sink {
    Jsonl,
    Sqlite,
}

const CASES: &[Case] = &[
    Case::Copy,
    Case::Receiver {
        sink: Sink::Jsonl,
        parallel: false,
    },
    Case::Receiver {
        sink: Sink::Jsonl,
        parallel: true,
    },
    Case::Receiver {
        sink: Sink::Sqlite,
        parallel: false,
    },
    Case::Receiver {
        sink: Sink::Sqlite,
        parallel: true,
    },
];

pub fn run(opts: Options) {
    let receiver = receiver_binary();
    let pg = PgServer::builder()
        .setting("max_wal_size", "8GB")
        .setting("shared_buffers", "1GB")
        .start();
    let mut db = pg.connect();
    let version = pg.psql("SHOW server_version").trim().to_string();
    fill_ledger(&mut db, opts.rows);
    let size: String = db
        .query_one("SELECT pg_size_pretty(pg_relation_size('ledger'))", &[])
        .expect("table size")
        .get(0);
    let url = pg.url("postgres");
    let psql = pg.bin_dir().join("psql");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let copy = || {
        let mut c = Command::new(&psql);
        c.args([
            "-X",
            "-q",
            "-d",
            &url,
            "-c",
            "COPY ledger TO STDOUT (FORMAT binary)",
        ])
        .stdout(Stdio::null());
        c
    };
    wall(&mut copy()); // warm the cache
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    for round in 0..opts.repeat {
        for k in 0..CASES.len() {
            let i = (k + round) % CASES.len();
            // The SQLite cases write ~2 GB each; without this the next case pays for it.
            settle(&mut db);
            let secs = match CASES[i] {
                Case::Copy => wall(&mut copy()),
                Case::Receiver { sink, parallel } => {
                    let config = dir.path().join(format!("r{round}c{i}.toml"));
                    let sink_url = match sink {
                        Sink::Jsonl => "jsonl:-".to_string(),
                        Sink::Sqlite => {
                            format!(
                                "sqlite:{}",
                                dir.path().join(format!("r{round}c{i}.sqlite")).display()
                            )
                        }
                    };
                    std::fs::write(
                        &config,
                        format!(
                            "[source]\nurl = \"{url}\"\n[sink]\nurl = \"{sink_url}\"\n[sync]\nparallel = {}\n\
                             [[tables]]\nname = \"public.ledger\"\nmode = \"snapshot\"\n",
                            if parallel { opts.parallel } else { 1 }
                        ),
                    )
                    .expect("writing the config");
                    let mut c = Command::new(&receiver);
                    c.arg("snapshot")
                        .arg("--config")
                        .arg(&config)
                        .env("RUST_LOG", "warn")
                        .stdout(Stdio::null());
                    let s = wall(&mut c);
                    remove_sqlite(&dir.path().join(format!("r{round}c{i}.sqlite")));
                    s
                }
            };
            times[i].push(secs);
        }
    }
    let base = opts.rows as f64 / median(&times[0]);
    println!(
        "\n## snapshot: {} rows ({size}) of the ledger table, PostgreSQL {version}, {} round(s), medians\n",
        opts.rows, opts.repeat
    );
    println!("| path | seconds | rows/s | ratio to COPY |");
    println!("|---|---:|---:|---:|");
    let mut rates = Vec::new();
    for (case, t) in CASES.iter().zip(&times) {
        let secs = median(t);
        let rate = opts.rows as f64 / secs;
        rates.push(rate);
        let label = match case {
            Case::Copy => "psql COPY (FORMAT binary) > /dev/null".to_string(),
            Case::Receiver { sink, parallel } => format!(
                "fig-receiver snapshot → {}, {}",
                match sink {
                    Sink::Jsonl => "JSON Lines > /dev/null",
                    Sink::Sqlite => "SQLite",
                },
                if *parallel {
                    format!("parallel {}", opts.parallel)
                } else {
                    "single stream".to_string()
                }
            ),
        };
        println!("| {label} | {secs:.2} | {rate:.0} | {:.2}× |", rate / base);
    }
    let best = |a: usize, b: usize| rates[a].max(rates[b]) / base;
    println!("\nTargets:");
    println!(
        "- JSON Lines ≥ 0.8× COPY: {:.2}× ({})",
        best(1, 2),
        verdict(best(1, 2) >= 0.8)
    );
    println!(
        "- SQLite ≥ 0.4× COPY: {:.2}× ({})",
        best(3, 4),
        verdict(best(3, 4) >= 0.4)
    );
    println!(
        "- parallel faster than single stream: JSON Lines {:.2}×, SQLite {:.2}× ({})",
        rates[2] / rates[1],
        rates[4] / rates[3],
        verdict(rates[2] > rates[1] && rates[4] > rates[3])
    );
}
