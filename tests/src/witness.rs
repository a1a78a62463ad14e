//! An independent witness of what the source changed: a `test_decoding` slot created beside the
//! receiver's, read with PostgreSQL's own decoder, against which a sink's history is checked change
//! for change (per transaction, table and operation), so "every change exactly once" is judged by
//! something this project did not write.

use std::collections::BTreeMap;

use crate::receiver::{HistoryRow, Target};

/// Row changes per (xid, `schema.table`, op).
pub type Counts = BTreeMap<(i64, String, String), u64>;

/// Creates the witness slot `slot` (create it just before the receiver's, with no writes between).
pub fn create(c: &mut postgres::Client, slot: &str) {
    c.execute(
        "SELECT 1 FROM pg_create_logical_replication_slot($1, 'test_decoding')",
        &[&slot],
    )
    .expect("creating the test_decoding witness slot");
}

/// Row changes of the tables `keep` accepts (`schema.table` as test_decoding spells it), as the
/// witness slot saw them (peeked: the slot keeps them).
pub fn changes(c: &mut postgres::Client, slot: &str, keep: impl Fn(&str) -> bool) -> Counts {
    let rows = c
        .query(
            "SELECT data FROM pg_logical_slot_peek_changes($1, NULL, NULL, 'skip-empty-xacts', '1')",
            &[&slot],
        )
        .expect("peeking the witness slot");
    let mut counts = Counts::new();
    let mut xid: Option<i64> = None;
    for r in rows {
        let line: String = r.get(0);
        if let Some(x) = line.strip_prefix("BEGIN ") {
            xid = Some(x.parse().expect("BEGIN <xid>"));
        } else if line.starts_with("COMMIT") {
            xid = None;
        } else if let Some(rest) = line.strip_prefix("table ") {
            let (table, rest) = rest
                .split_once(": ")
                .unwrap_or_else(|| panic!("unexpected test_decoding line {line:?}"));
            let op = rest.split(':').next().unwrap_or_default().to_lowercase();
            if keep(table) {
                let x = xid.unwrap_or_else(|| panic!("a change outside BEGIN/COMMIT: {line:?}"));
                *counts.entry((x, table.to_owned(), op)).or_insert(0) += 1;
            }
        }
    }
    counts
}

/// The same counts from a sink's history, for the tables `keep` accepts. A change recorded under
/// its partitioned root counts for the leaf partition it names, as test_decoding reports it.
pub fn history_counts(history: &[HistoryRow], keep: impl Fn(&str) -> bool) -> Counts {
    let mut counts = Counts::new();
    for h in history {
        let table = h
            .partition
            .clone()
            .unwrap_or_else(|| format!("{}.{}", h.schema, h.table));
        if keep(&table) {
            *counts.entry((h.xid, table, h.op.clone())).or_insert(0) += 1;
        }
    }
    counts
}

/// Event ids are (commit LSN, ordinal): within a commit the ordinals run without gaps or repeats and
/// share one xid; no two transactions share a commit LSN.
#[track_caller]
pub fn assert_event_ids_well_formed(history: &[HistoryRow]) {
    let mut by_commit: BTreeMap<i64, Vec<&HistoryRow>> = BTreeMap::new();
    for h in history {
        by_commit.entry(h.commit_lsn).or_default().push(h);
    }
    let mut xid_commit: BTreeMap<i64, i64> = BTreeMap::new();
    for (lsn, rows) in &by_commit {
        let first = rows[0].ordinal;
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(
                r.ordinal,
                first + i as i64,
                "ordinals of commit {lsn} are not contiguous: {:?}",
                rows.iter().map(|r| r.ordinal).collect::<Vec<_>>()
            );
            assert_eq!(r.xid, rows[0].xid, "commit {lsn} holds changes of two xids");
        }
        if let Some(other) = xid_commit.insert(rows[0].xid, *lsn) {
            panic!(
                "xid {} appears at commit LSNs {other} and {lsn}",
                rows[0].xid
            );
        }
    }
}

/// Every change exactly once: the history's per-transaction counts of the tables `keep` accepts
/// equal the witness's (`expected`, counted with the same `keep`).
#[track_caller]
pub fn assert_history_complete(expected: &Counts, target: &Target, keep: impl Fn(&str) -> bool) {
    let history = target.open().history();
    assert_event_ids_well_formed(&history);
    let got = history_counts(&history, keep);
    if &got == expected {
        return;
    }
    let mut diffs = Vec::new();
    for (k, v) in expected {
        let g = got.get(k).copied().unwrap_or(0);
        if g != *v {
            diffs.push(format!(
                "xid {} {} {}: source {v}, history {g}",
                k.0, k.1, k.2
            ));
        }
    }
    for (k, g) in &got {
        if !expected.contains_key(k) {
            diffs.push(format!(
                "xid {} {} {}: source 0, history {g}",
                k.0, k.1, k.2
            ));
        }
    }
    let total = |c: &Counts| c.values().sum::<u64>();
    panic!(
        "{}: the history ({} rows) does not hold the source's changes ({} rows) exactly once; {} differences, first ones:\n{}",
        target.plugin,
        total(&got),
        total(expected),
        diffs.len(),
        diffs.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}
