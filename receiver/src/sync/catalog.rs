//! What the source's catalog says about a table to copy: its columns (by attnum), their types, its
//! key, its size and whether row-level security guards it.

use std::sync::Arc;

use tokio_postgres::Client;

use super::SyncError;
use crate::config::PartitionMirrors;
use crate::decode::types::ColumnType;
use crate::decode::{TypeRegistry, TypeRow, TYPE_QUERY};
use crate::model::{Column, Relation};

/// Which columns a loaded relation marks as its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRule {
    /// As the replication stream marks them: the replica identity (DEFAULT: the primary key; USING
    /// INDEX: that index; FULL: every column; NOTHING: none). For the initial copy of CDC tables, so
    /// the copy and the stream describe a table alike.
    ReplicaIdentity,
    /// The primary key (else the replica identity index). For snapshot and incremental tables.
    PrimaryKey,
}

/// A table as the copy sees it.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub relation: Arc<Relation>,
    /// Per column, how its value is read.
    pub types: Vec<ColumnType>,
    /// Positions of the primary key columns (else the replica identity index's), in relation order.
    pub primary_key: Vec<usize>,
    /// Heap blocks (`pg_relation_size / block_size`); 0 until [`heap_blocks`] reads it under the
    /// copy's lock (`describe` takes no lock on the table, so it cannot wait for DDL).
    pub blocks: u64,
    pub block_size: u64,
    /// The planner's row estimate (`reltuples`; negative when never analyzed).
    pub estimated_rows: f64,
    /// A partitioned table of which only some leaf partitions are streamed: read only theirs.
    pub only_partitions: Option<Vec<u32>>,
}

fn query_err(what: &str) -> impl Fn(tokio_postgres::Error) -> SyncError + '_ {
    move |e| SyncError::query(what, e)
}

/// Loads the type registry (built-ins plus the catalog's types) over `client`.
pub async fn load_types(client: &Client) -> Result<TypeRegistry, SyncError> {
    let rows = client
        .query(TYPE_QUERY, &[])
        .await
        .map_err(query_err("reading pg_type"))?;
    let mut registry = TypeRegistry::builtin();
    for r in rows {
        let row = (|| -> Result<TypeRow, tokio_postgres::Error> {
            Ok(TypeRow::from((
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
                r.try_get(5)?,
                r.try_get(6)?,
            )))
        })()
        .map_err(query_err("reading pg_type"))?;
        registry.insert(row);
    }
    // money's text output has the fraction digits of the server's lc_monetary (the walsender's
    // too: the same role and database defaults apply to it).
    let scale: i32 = client
        .query_one(
            "SELECT pg_catalog.scale('0'::pg_catalog.money::pg_catalog.numeric)",
            &[],
        )
        .await
        .map_err(query_err("reading the fraction digits of money"))?
        .get(0);
    registry.set_money_scale(u8::try_from(scale).unwrap_or(2));
    Ok(registry)
}

/// The server's `server_version_num`.
pub async fn server_version(client: &Client) -> Result<u32, SyncError> {
    let v: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(query_err("reading the server version"))?
        .get(0);
    Ok(v as u32)
}

/// Describes `schema.table` (names as stored, case and all).
pub async fn describe(
    client: &Client,
    schema: &str,
    table: &str,
    rule: KeyRule,
    types: &TypeRegistry,
    version: u32,
    generated: bool,
) -> Result<TableInfo, SyncError> {
    let what = format!("describing {schema}.{table}");
    let row = client
        .query_opt(
            "SELECT c.oid, c.relreplident, c.relkind, c.reltuples::float8, \
             current_setting('block_size')::int8 \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2",
            &[&schema, &table],
        )
        .await
        .map_err(query_err(&what))?
        .ok_or_else(|| SyncError::NoTable {
            table: format!("{schema}.{table}"),
        })?;
    let relid: u32 = row.get(0);
    let replident = row.get::<_, i8>(1) as u8;
    let relkind = row.get::<_, i8>(2) as u8;
    if !matches!(relkind, b'r' | b'p') {
        return Err(SyncError::NotATable {
            table: format!("{schema}.{table}"),
        });
    }
    // Generated columns are copied exactly when they are streamed (`include_generated`): stored
    // ones then come with their values, as figoutput sends them; virtual ones (PostgreSQL 18) have
    // no stored value to stream, so never.
    let generated = match (version >= 120000, generated) {
        (false, _) => "false",
        (true, false) => "a.attgenerated <> ''",
        (true, true) => "a.attgenerated = 'v'",
    };
    let cols = client
        .query(
            &format!(
                "SELECT a.attnum, a.attname::text, a.atttypid, a.atttypmod, \
                 pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull \
                 FROM pg_attribute a WHERE a.attrelid = $1 AND a.attnum > 0 \
                 AND NOT a.attisdropped AND NOT ({generated}) ORDER BY a.attnum"
            ),
            &[&relid],
        )
        .await
        .map_err(query_err(&what))?;
    let key_of = |sql: &'static str| async move {
        client
            .query(sql, &[&relid])
            .await
            .map(|rows| rows.iter().map(|r| r.get::<_, i16>(0)).collect::<Vec<_>>())
    };
    let pk =
        key_of("SELECT unnest(indkey)::int2 FROM pg_index WHERE indrelid = $1 AND indisprimary")
            .await
            .map_err(query_err(&what))?;
    let ri =
        key_of("SELECT unnest(indkey)::int2 FROM pg_index WHERE indrelid = $1 AND indisreplident")
            .await
            .map_err(query_err(&what))?;
    let stream_key = |attnum: i16| match replident {
        b'd' => pk.contains(&attnum),
        b'i' => ri.contains(&attnum),
        b'f' => true,
        _ => false,
    };
    let primary = if pk.is_empty() { &ri } else { &pk };
    let mut columns = Vec::with_capacity(cols.len());
    let mut col_types = Vec::with_capacity(cols.len());
    let mut primary_key = Vec::new();
    for (i, c) in cols.iter().enumerate() {
        let attnum: i16 = c.get(0);
        let oid: u32 = c.get(2);
        let typmod: i32 = c.get(3);
        let ty = types.resolve(oid, typmod).map_err(|e| SyncError::Type {
            table: format!("{schema}.{table}"),
            column: c.get(1),
            reason: e.to_string(),
        })?;
        if primary.contains(&attnum) {
            primary_key.push(i);
        }
        columns.push(Column {
            name: c.get(1),
            type_name: c.get(4),
            type_oid: oid,
            key: match rule {
                KeyRule::ReplicaIdentity => stream_key(attnum),
                KeyRule::PrimaryKey => primary.contains(&attnum),
            },
            not_null: c.get(5),
            attnum: Some(attnum),
        });
        col_types.push(ty);
    }
    Ok(TableInfo {
        relation: Arc::new(Relation {
            relid,
            schema: schema.to_string(),
            table: table.to_string(),
            columns,
        }),
        types: col_types,
        primary_key,
        blocks: 0,
        block_size: row.get::<_, i64>(4).max(1) as u64,
        estimated_rows: row.get(3),
        only_partitions: None,
    })
}

/// The heap blocks of `relid` now. `pg_relation_size` takes an `ACCESS SHARE` lock on the table:
/// call it once the copy holds one.
pub async fn heap_blocks(client: &Client, relid: u32) -> Result<u64, SyncError> {
    let blocks: Option<i64> = client
        .query_one(
            "SELECT (pg_relation_size($1::oid) / current_setting('block_size')::int)::int8",
            &[&relid],
        )
        .await
        .map_err(query_err("reading the table's size"))?
        .get(0);
    Ok(blocks.unwrap_or(0).max(0) as u64)
}

/// Whether some index of `relid` starts with the column `attnum` (a cursor query can use it).
pub async fn leads_an_index(client: &Client, relid: u32, attnum: i16) -> Result<bool, SyncError> {
    let row = client
        .query_opt(
            "SELECT 1 FROM pg_index WHERE indrelid = $1 AND indkey[0] = $2 LIMIT 1",
            &[&relid, &attnum],
        )
        .await
        .map_err(query_err("reading the table's indexes"))?;
    Ok(row.is_some())
}

/// A table the slot streams, as it is mirrored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrored {
    pub schema: String,
    pub table: String,
    /// The relations whose changes the stream brings into this mirror: the table, or the leaves
    /// (or the partitioned table itself, when pgoutput publishes via the root).
    pub relids: Vec<u32>,
    /// For a partitioned table mirrored under its root: the leaf partitions whose rows the mirror
    /// holds (those the slot streams).
    pub partitions: Option<Partitions>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitions {
    /// Relids, sorted.
    pub leaves: Vec<u32>,
    /// Whether they are every leaf the partitioned table has (else a copy reads only them).
    pub all: bool,
}

impl Mirrored {
    pub fn name(&self) -> (String, String) {
        (self.schema.clone(), self.table.clone())
    }
}

/// The tables a slot streams: a publication's (as `pg_publication_tables` lists them: a partitioned
/// table's partitions, or the table itself when the publication publishes through its root), or,
/// without a publication (figoutput), every user table that holds rows (partitions rather than
/// partitioned tables: both plugins report a partition's changes under its own name);
/// narrowed to those matching
/// `patterns` (figoutput's include list, `schema.table` by SQL identifier rules, `*` for any part;
/// empty: no narrowing), as the plugin narrows them. An exact pattern that matches no table is an
/// error naming it: it would silently stream nothing.
///
/// Then as mirrored: with [`PartitionMirrors::Root`], leaf partitions under their topmost
/// partitioned table, which lists the leaves it holds. Sorted by schema and name.
pub async fn cdc_tables(
    client: &Client,
    publication: Option<&str>,
    patterns: &[String],
    mirrors: PartitionMirrors,
) -> Result<Vec<Mirrored>, SyncError> {
    let patterns = patterns
        .iter()
        .map(|p| crate::ident::TableName::pattern(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(SyncError::Unsupported)?;
    let rows = match publication {
        Some(p) => client
            .query(
                "SELECT t.schemaname::text, t.tablename::text, c.oid, \
                 CASE WHEN c.relispartition THEN 'partition' ELSE c.relkind::text END                  FROM pg_publication_tables t                  JOIN pg_namespace n ON n.nspname = t.schemaname                  JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.tablename                  WHERE t.pubname = $1",
                &[&p],
            )
            .await,
        None => client
            .query(
                "SELECT n.nspname::text, c.relname::text, c.oid, \
                 CASE WHEN c.relispartition THEN 'partition' ELSE c.relkind::text END FROM pg_class c                  JOIN pg_namespace n ON n.oid = c.relnamespace                  WHERE c.relkind = 'r'                  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'figoutput')                  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'",
                &[],
            )
            .await,
    }
    .map_err(query_err("listing the replicated tables"))?;
    let out: Vec<(String, String, u32, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        // figoutput's own bookkeeping (the DDL log) is never copied.
        .filter(|(s, ..): &(String, String, u32, String)| s != crate::model::EXTENSION_SCHEMA)
        .collect();
    let unmatched: Vec<String> = patterns
        .iter()
        .filter(|p| {
            matches!(
                (&p.schema, &p.table),
                (crate::ident::Part::Exact(_), crate::ident::Part::Exact(_))
            ) && !out.iter().any(|(s, t, ..)| p.matches(s, t))
        })
        .map(|p| p.spelled())
        .collect();
    if !unmatched.is_empty() {
        return Err(SyncError::NoTable {
            table: unmatched.join(", "),
        });
    }
    let streamed: Vec<(String, String, u32, String)> = out
        .into_iter()
        .filter(|(s, t, ..)| patterns.is_empty() || patterns.iter().any(|p| p.matches(s, t)))
        .collect();
    let mut mirrored = match mirrors {
        PartitionMirrors::Leaf => streamed
            .into_iter()
            .map(|(schema, table, relid, _)| Mirrored {
                schema,
                table,
                relids: vec![relid],
                partitions: None,
            })
            .collect(),
        PartitionMirrors::Root => under_roots(client, streamed).await?,
    };
    mirrored.sort_by(|a, b| (&a.schema, &a.table).cmp(&(&b.schema, &b.table)));
    mirrored.dedup_by(|a, b| (&a.schema, &a.table) == (&b.schema, &b.table));
    Ok(mirrored)
}

/// What makes each mirrored table part of `publication` now: the catalog rows that put it there
/// (`pg_publication_rel`, `pg_publication_namespace` of it or of a partitioned ancestor, or the
/// publication being `FOR ALL TABLES`), spelled as one text per mirror. Dropping a table from the
/// publication and adding it back makes a new row, so the text changes even when both happened
/// between two looks (the changes made meanwhile were never streamed).
pub async fn memberships(
    client: &Client,
    publication: &str,
    mirrored: &[Mirrored],
) -> Result<std::collections::HashMap<(String, String), String>, SyncError> {
    let version = server_version(client).await?;
    let relids: Vec<u32> = mirrored
        .iter()
        .flat_map(|m| m.relids.iter().copied())
        .collect();
    // The relation and its partitioned ancestors (none before PostgreSQL 12's function).
    let lineage = if version >= 120000 {
        "SELECT c.oid UNION SELECT relid FROM pg_partition_ancestors(c.oid)"
    } else {
        "SELECT c.oid"
    };
    let by_schema = if version >= 150000 {
        format!(
            "UNION SELECT 'n' || pn.oid FROM pg_publication_namespace pn \
             WHERE pn.pnpubid = p.oid AND pn.pnnspid IN \
             (SELECT a.relnamespace FROM pg_class a WHERE a.oid IN ({lineage}))"
        )
    } else {
        String::new()
    };
    let sql = format!(
        "SELECT c.oid, coalesce((SELECT string_agg(x, ',' ORDER BY x) FROM ( \
           SELECT 'all' AS x WHERE p.puballtables \
           UNION SELECT 'r' || pr.oid FROM pg_publication_rel pr \
             WHERE pr.prpubid = p.oid AND pr.prrelid IN ({lineage}) {by_schema}) s), '') \
         FROM pg_class c, pg_publication p WHERE p.pubname = $1 AND c.oid = ANY($2::oid[])"
    );
    let rows = client
        .query(&sql, &[&publication, &relids])
        .await
        .map_err(query_err("reading the publication's members"))?;
    Ok(per_mirror(mirrored, &rows))
}

/// The definitions of the enum and composite types (and arrays of them) each mirrored table's
/// columns use, spelled as one text per mirror: an enum's labels in order, a composite's attributes.
/// `ALTER TYPE … RENAME VALUE` or `ADD ATTRIBUTE` changes what existing rows read as without any
/// row change in the WAL; a change of this text says the table's mirror needs a re-copy.
pub async fn type_shapes(
    client: &Client,
    mirrored: &[Mirrored],
) -> Result<std::collections::HashMap<(String, String), String>, SyncError> {
    let relids: Vec<u32> = mirrored
        .iter()
        .flat_map(|m| m.relids.iter().copied())
        .collect();
    let rows = client
        .query(
            "SELECT a.attrelid, string_agg(DISTINCT b.oid::text || '=' || md5( \
               coalesce((SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) \
                         FROM pg_enum e WHERE e.enumtypid = b.oid), '') || '|' || \
               coalesce((SELECT string_agg(ca.attname || ' ' || ca.atttypid, ',' ORDER BY ca.attnum) \
                         FROM pg_attribute ca WHERE ca.attrelid = b.typrelid AND ca.attnum > 0 \
                         AND NOT ca.attisdropped), '')), ',') \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             JOIN pg_type b ON b.oid = CASE WHEN t.typelem <> 0 AND t.typlen = -1 THEN t.typelem ELSE t.oid END \
             WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped \
             AND b.typtype IN ('e', 'c') GROUP BY a.attrelid",
            &[&relids],
        )
        .await
        .map_err(query_err("reading the shapes of the tables' enum and composite types"))?;
    Ok(per_mirror(mirrored, &rows))
}

/// Rows of (relid, comma-separated parts) gathered per mirror over the relations it streams:
/// the parts of all of them, sorted, each once, joined by commas.
fn per_mirror(
    mirrored: &[Mirrored],
    rows: &[tokio_postgres::Row],
) -> std::collections::HashMap<(String, String), String> {
    let of: std::collections::HashMap<u32, String> = rows
        .iter()
        .map(|r| (r.get::<_, u32>(0), r.get(1)))
        .collect();
    mirrored
        .iter()
        .map(|m| {
            let mut parts: Vec<&str> = m
                .relids
                .iter()
                .filter_map(|r| of.get(r))
                .flat_map(|t| t.split(','))
                .filter(|t| !t.is_empty())
                .collect();
            parts.sort_unstable();
            parts.dedup();
            ((m.schema.clone(), m.table.clone()), parts.join(","))
        })
        .collect()
}

/// Streamed tables (schema, name, relid, relkind) with leaf partitions grouped under their roots;
/// a partitioned table streamed as itself (`publish_via_partition_root`) lists all its leaves.
async fn under_roots(
    client: &Client,
    streamed: Vec<(String, String, u32, String)>,
) -> Result<Vec<Mirrored>, SyncError> {
    let relids: Vec<u32> = streamed.iter().map(|t| t.2).collect();
    let routes = partition_routes(client, &relids).await?;
    let mut out: Vec<Mirrored> = Vec::new();
    let mut roots: std::collections::BTreeMap<u32, (Mirrored, Vec<u32>)> = Default::default();
    for (schema, table, relid, relkind) in streamed {
        if let Some(route) = routes.get(&relid) {
            let entry = roots.entry(route.root_relid).or_insert_with(|| {
                (
                    Mirrored {
                        schema: route.root_schema.clone(),
                        table: route.root_table.clone(),
                        relids: Vec::new(),
                        partitions: None,
                    },
                    route.leaves.clone(),
                )
            });
            let p = entry.0.partitions.get_or_insert(Partitions {
                leaves: Vec::new(),
                all: false,
            });
            p.leaves.push(relid);
            entry.0.relids.push(relid);
            continue;
        }
        let partitions = match relkind.as_str() {
            // A partition when listed, no longer one now (detached or dropped in between): the
            // next look sees it as it is; taken as a table of its own now, a dropped one would
            // wait for a copy forever.
            "partition" => continue,
            "p" => {
                let leaves = leaves_of(client, relid).await?;
                Some(Partitions { leaves, all: true })
            }
            _ => None,
        };
        out.push(Mirrored {
            schema,
            table,
            relids: vec![relid],
            partitions,
        });
    }
    for (_, (mut m, all_leaves)) in roots {
        if let Some(p) = &mut m.partitions {
            p.leaves.sort_unstable();
            p.all = p.leaves == all_leaves;
        }
        out.push(m);
    }
    Ok(out)
}

/// Every leaf partition of `root` (tables, any depth), sorted.
pub async fn leaves_of(client: &Client, root: u32) -> Result<Vec<u32>, SyncError> {
    let mut leaves: Vec<u32> = client
        .query(PARTITION_LEAVES, &[&vec![root]])
        .await
        .map_err(query_err("listing the partitions"))?
        .iter()
        .map(|r| r.get(1))
        .collect();
    leaves.sort_unstable();
    Ok(leaves)
}

/// Finds each `relid`'s topmost partitioned ancestor (any depth; PostgreSQL 10's `relispartition`,
/// no `pg_partition_root`, which 11 lacks): (leaf, root) pairs, for the relids that are partitions.
const PARTITION_ROOTS: &str = "WITH RECURSIVE up(leaf, rel, depth) AS ( \
     SELECT c.oid, c.oid, 0 FROM pg_catalog.pg_class c \
     WHERE c.oid = ANY($1::oid[]) AND c.relispartition \
     UNION ALL \
     SELECT up.leaf, i.inhparent, up.depth + 1 FROM up \
     JOIN pg_catalog.pg_class ch ON ch.oid = up.rel AND ch.relispartition \
     JOIN pg_catalog.pg_inherits i ON i.inhrelid = up.rel) \
     SELECT DISTINCT ON (leaf) leaf, rel FROM up ORDER BY leaf, depth DESC";

/// Every leaf partition (a table, at any depth) of each root in `$1`: (root, leaf) pairs.
const PARTITION_LEAVES: &str = "WITH RECURSIVE down(root, rel) AS ( \
     SELECT r, r FROM unnest($1::oid[]) AS r \
     UNION ALL \
     SELECT down.root, i.inhrelid FROM down \
     JOIN pg_catalog.pg_inherits i ON i.inhparent = down.rel \
     JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid AND c.relispartition) \
     SELECT down.root, down.rel FROM down JOIN pg_catalog.pg_class c ON c.oid = down.rel \
     WHERE c.relkind = 'r' AND down.rel <> down.root";

/// The routes of those of `relids` that are leaf partitions, as the catalog says now: each to its
/// topmost partitioned root, with the root's columns and every leaf it has.
pub async fn partition_routes(
    client: &Client,
    relids: &[u32],
) -> Result<crate::pipeline::partitions::Routes, SyncError> {
    use crate::pipeline::partitions::Route;
    let what = "reading the partitions' roots";
    let mut routes = crate::pipeline::partitions::Routes::new();
    if relids.is_empty() {
        return Ok(routes);
    }
    let pairs: Vec<(u32, u32)> = client
        .query(PARTITION_ROOTS, &[&relids])
        .await
        .map_err(query_err(what))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if pairs.is_empty() {
        return Ok(routes);
    }
    let mut roots: Vec<u32> = pairs.iter().map(|p| p.1).collect();
    roots.sort_unstable();
    roots.dedup();
    // Names of the roots and leaves, and the roots' columns: one query each, whatever the count
    // (a table under pg_partman can have hundreds of partitions).
    let mut oids = roots.clone();
    oids.extend(pairs.iter().map(|p| p.0));
    let names: std::collections::HashMap<u32, (String, String)> = client
        .query(
            "SELECT c.oid, n.nspname::text, c.relname::text FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = ANY($1::oid[])",
            &[&oids],
        )
        .await
        .map_err(query_err(what))?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let mut routes_of_root: std::collections::HashMap<u32, Route> = roots
        .iter()
        .filter_map(|root| {
            let (schema, table) = names.get(root)?.clone();
            Some((
                *root,
                Route {
                    leaf: String::new(),
                    root_relid: *root,
                    root_schema: schema,
                    root_table: table,
                    root_columns: Vec::new(),
                    leaves: Vec::new(),
                },
            ))
        })
        .collect();
    for r in client
        .query(
            "SELECT attrelid, attname::text, attnum FROM pg_catalog.pg_attribute \
             WHERE attrelid = ANY($1::oid[]) AND attnum > 0 AND NOT attisdropped \
             ORDER BY attrelid, attnum",
            &[&roots],
        )
        .await
        .map_err(query_err(what))?
    {
        if let Some(route) = routes_of_root.get_mut(&r.get::<_, u32>(0)) {
            route.root_columns.push((r.get(1), r.get(2)));
        }
    }
    for r in client
        .query(PARTITION_LEAVES, &[&roots])
        .await
        .map_err(query_err(what))?
    {
        let (root, leaf): (u32, u32) = (r.get(0), r.get(1));
        if let Some(route) = routes_of_root.get_mut(&root) {
            route.leaves.push(leaf);
        }
    }
    for route in routes_of_root.values_mut() {
        route.leaves.sort_unstable();
    }
    for (leaf, root) in pairs {
        let (Some(route), Some((schema, table))) = (routes_of_root.get(&root), names.get(&leaf))
        else {
            continue;
        };
        routes.insert(
            leaf,
            std::sync::Arc::new(Route {
                leaf: format!("{schema}.{table}"),
                ..route.clone()
            }),
        );
    }
    Ok(routes)
}
