//! Reading figoutput's output in tests: the SQL decoding functions give the writes, the shared
//! format crate decodes them. Records borrow from their bytes, so the bytes are leaked for the life
//! of the test process: tests stay short to write and the leak ends with the test binary.

use fig_format::decode::{decode_all, Column, Record, Relation, Value};
use fig_format::ValueKind;
use std::collections::HashMap;

/// Every record of the writes that `pg_logical_slot_{get,peek}_binary_changes` returned.
pub struct Decoded {
    pub records: Vec<Record<'static>>,
}

/// A row change with its values given their meaning by the relation's latest RELATION record.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub op: &'static str,
    pub table: String,
    pub new: Option<Vec<Value<'static>>>,
    pub old: Option<Vec<Value<'static>>>,
}

impl Decoded {
    /// Consumes the slot's pending changes (`get`) with these plugin options.
    pub fn get(client: &mut postgres::Client, slot: &str, options: &[(&str, &str)]) -> Decoded {
        Self::try_get(client, slot, options).unwrap_or_else(|e| panic!("decoding slot {slot}: {e}"))
    }

    pub fn try_get(
        client: &mut postgres::Client,
        slot: &str,
        options: &[(&str, &str)],
    ) -> Result<Decoded, postgres::Error> {
        let mut sql =
            String::from("SELECT data FROM pg_logical_slot_get_binary_changes($1, NULL, NULL");
        let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&slot];
        let flat: Vec<&str> = options.iter().flat_map(|(k, v)| [*k, *v]).collect();
        for (i, _) in flat.iter().enumerate() {
            sql.push_str(&format!(", ${}", i + 2));
        }
        sql.push(')');
        for v in &flat {
            params.push(v);
        }
        let rows = client.query(&sql, &params)?;
        let mut records = Vec::new();
        for row in rows {
            let bytes: Vec<u8> = row.get(0);
            let leaked: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            records.extend(
                decode_all(leaked).expect("figoutput wrote bytes the format decoder refuses"),
            );
        }
        Ok(Decoded { records })
    }

    /// The row changes, in order, interpreted with the RELATION in force at each one.
    pub fn rows(&self) -> Vec<Row> {
        self.rows_with(&|c| vec![c.elem_kind])
    }

    /// [`Decoded::rows`] for tables with arrays whose elements are arrays: `elem_kinds` gives a
    /// column's element kind per nesting level (see `Value::from_raw_nested`), which the RELATION
    /// alone does not.
    pub fn rows_with(&self, elem_kinds: &dyn Fn(&Column<'_>) -> Vec<ValueKind>) -> Vec<Row> {
        let mut rels: HashMap<u32, Relation<'static>> = HashMap::new();
        let mut out = Vec::new();
        for r in &self.records {
            let (op, relid, new, old) = match r.clone() {
                Record::Relation(rel) => {
                    rels.insert(rel.relid, rel);
                    continue;
                }
                Record::Insert { relid, new, .. } => ("insert", relid, Some(new), None),
                Record::Update {
                    relid, old, new, ..
                } => ("update", relid, Some(new), old.map(|o| o.values)),
                Record::Delete { relid, old, .. } => ("delete", relid, None, old.map(|o| o.values)),
                _ => continue,
            };
            let rel = rels
                .get(&relid)
                .unwrap_or_else(|| panic!("change for relation {relid} before its RELATION"));
            let interpret = |t: Vec<fig_format::decode::Raw<'static>>| {
                assert_eq!(
                    t.len(),
                    rel.columns.len(),
                    "tuple width differs from its RELATION"
                );
                t.into_iter()
                    .zip(&rel.columns)
                    .map(|(raw, c)| Value::from_raw_nested(raw, c.kind, &elem_kinds(c)))
                    .collect::<Result<Vec<_>, _>>()
                    .expect("values match RELATION")
            };
            out.push(Row {
                op,
                table: format!("{}.{}", rel.schema, rel.table),
                new: new.map(interpret),
                old: old.map(interpret),
            });
        }
        out
    }

    /// The RELATION records, in order.
    pub fn relations(&self) -> Vec<&Relation<'static>> {
        self.records
            .iter()
            .filter_map(|r| {
                if let Record::Relation(rel) = r {
                    Some(rel)
                } else {
                    None
                }
            })
            .collect()
    }

    /// A one-word name per record, for asserting the shape of a stream.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.records
            .iter()
            .map(|r| match r {
                Record::Begin { .. } => "BEGIN",
                Record::Commit { .. } => "COMMIT",
                Record::Origin { .. } => "ORIGIN",
                Record::Relation(_) => "RELATION",
                Record::Insert { .. } => "INSERT",
                Record::Update { .. } => "UPDATE",
                Record::Delete { .. } => "DELETE",
                Record::Truncate { .. } => "TRUNCATE",
                Record::Message { .. } => "MESSAGE",
                Record::Ddl { .. } => "DDL",
                Record::StreamStart { .. } => "STREAM_START",
                Record::StreamStop => "STREAM_STOP",
                Record::StreamCommit { .. } => "STREAM_COMMIT",
                Record::StreamAbort { .. } => "STREAM_ABORT",
            })
            .collect()
    }
}

/// A server with figoutput created in its `postgres` database and a figoutput slot named `slot`.
pub fn server_with_slot(slot: &str) -> (crate::PgServer, postgres::Client) {
    server_with_slot_using(crate::PgServer::builder(), slot)
}

pub fn server_with_slot_using(
    builder: crate::PgServerBuilder,
    slot: &str,
) -> (crate::PgServer, postgres::Client) {
    let pg = builder.start();
    let mut c = pg.connect();
    c.batch_execute("CREATE EXTENSION figoutput").expect(
        "CREATE EXTENSION figoutput (is it installed? run .ci/run or `cargo pgrx install`)",
    );
    c.execute(
        "SELECT pg_create_logical_replication_slot($1, 'figoutput')",
        &[&slot],
    )
    .expect("creating a figoutput slot");
    (pg, c)
}
