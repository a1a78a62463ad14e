//! A JSON Lines consumer as docs/RECEIVER.md tells one to write it, to check that a file lets its
//! reader rebuild every table exactly: a load (`load_start` … `read` lines … `load_end`) replaces
//! the table with its rows; `insert`, `update`, `delete` and `truncate` lines apply in file order,
//! an `update` or `delete` to the first row whose columns equal its `before` (the key, or the whole
//! old row under REPLICA IDENTITY FULL); a load without its `load_end` is discarded.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

/// One row: column name to JSON value.
pub type Row = Map<String, Value>;

/// The tables a JSON Lines file rebuilds, by `schema.table`.
#[derive(Debug, Default)]
pub struct Replica {
    pub tables: BTreeMap<String, Vec<Row>>,
    /// Loads seen, in file order: (table, sync, position).
    pub loads: Vec<(String, String, String)>,
}

fn table_of(line: &Value) -> String {
    format!(
        "{}.{}",
        line["schema"].as_str().unwrap_or_default(),
        line["table"].as_str().unwrap_or_default()
    )
}

fn matches(row: &Row, before: &Row) -> bool {
    before.iter().all(|(k, v)| row.get(k) == Some(v))
}

impl Replica {
    /// Replays the file at `path`; `keys`: the key columns of keyed tables, by `schema.table`.
    pub fn read(path: &Path, keys: &[(&str, &[&str])]) -> Replica {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut replica = Replica::default();
        let mut loading: BTreeMap<String, Vec<Row>> = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{} line {}: {e}: {line}", path.display(), n + 1));
            let table = table_of(&v);
            let obj = |k: &str| -> Row {
                v[k].as_object()
                    .cloned()
                    .unwrap_or_else(|| panic!("line {}: no `{k}` object: {line}", n + 1))
            };
            match (v["event"].as_str(), v["op"].as_str()) {
                (Some("load_start"), _) => {
                    loading.insert(table, Vec::new());
                }
                (Some("load_end"), _) => {
                    let rows = loading
                        .remove(&table)
                        .unwrap_or_else(|| panic!("line {}: load_end without load_start", n + 1));
                    replica.loads.push((
                        table.clone(),
                        v["sync"].as_str().unwrap_or_default().to_string(),
                        v["position"].as_str().unwrap_or_default().to_string(),
                    ));
                    replica.tables.insert(table, rows);
                }
                (_, Some("read")) => loading
                    .get_mut(&table)
                    .unwrap_or_else(|| panic!("line {}: a read outside a load", n + 1))
                    .push(obj("after")),
                (_, Some("insert")) => replica.tables.entry(table).or_default().push(obj("after")),
                (_, Some(op @ ("update" | "delete"))) => {
                    let before = match &v["before"] {
                        Value::Null => {
                            let key = keys
                                .iter()
                                .find(|(t, _)| *t == table)
                                .unwrap_or_else(|| panic!("line {}: {op} without `before` of a table with no key given: {line}", n + 1))
                                .1;
                            let after = obj("after");
                            key.iter()
                                .map(|k| {
                                    (k.to_string(), after.get(*k).cloned().unwrap_or(Value::Null))
                                })
                                .collect()
                        }
                        _ => obj("before"),
                    };
                    let rows = replica.tables.entry(table.clone()).or_default();
                    let at = rows
                        .iter()
                        .position(|r| matches(r, &before))
                        .unwrap_or_else(|| {
                            panic!(
                                "line {}: {op} of a row {table} does not hold: {line}",
                                n + 1
                            )
                        });
                    if op == "delete" {
                        rows.remove(at);
                    } else {
                        let mut after = obj("after");
                        // Unchanged TOAST columns are left out: the value stays what it was.
                        for c in v["unchanged_toast"].as_array().into_iter().flatten() {
                            let c = c.as_str().unwrap_or_default();
                            if let Some(old) = rows[at].get(c) {
                                after.insert(c.to_string(), old.clone());
                            }
                        }
                        rows[at] = after;
                    }
                }
                (_, Some("truncate")) => replica.tables.entry(table).or_default().clear(),
                _ => {} // schema changes, messages
            }
        }
        replica
    }

    /// The rows of `table` (`schema.table`), sorted by their JSON text.
    pub fn sorted(&self, table: &str) -> Vec<String> {
        let mut rows: Vec<String> = self
            .tables
            .get(table)
            .map(|r| {
                r.iter()
                    .map(|r| Value::Object(r.clone()).to_string())
                    .collect()
            })
            .unwrap_or_default();
        rows.sort();
        rows
    }
}

/// The rows of `query` (which must name every column, as `to_jsonb` spells them: numbers for
/// integers, strings for text) as JSON object texts, sorted.
pub fn source_rows(client: &mut postgres::Client, query: &str) -> Vec<String> {
    let mut rows: Vec<String> = client
        .query(&format!("SELECT to_jsonb(q)::text FROM ({query}) q"), &[])
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_str(&r.get::<_, String>(0)).unwrap();
            v.to_string()
        })
        .collect();
    rows.sort();
    rows
}
