//! Partitioned tables mirrored under their root: a change of a leaf partition becomes a change of
//! the root (`public.p`, what users query), with the leaf kept as [`Change::partition`].
//!
//! ```text
//! RELATION public.p_2024 (leaf, its own column order) ─┐
//!                                                      ├─ routed(): relid, name, column order of the root
//! Route (catalog: root, its columns, its leaves) ──────┘     values permuted by column name
//! ```
//!
//! Both plugins report a partitioned table's changes under its leaves (pgoutput unless the
//! publication sets `publish_via_partition_root`, which routes in the server). Partitions have the
//! root's columns by name and type, but not necessarily in its order (a table attached later, a
//! column dropped in one leaf), so values are matched by name. TRUNCATE lists leaves: every leaf
//! of a root truncated is the root emptied; only some of them is a change of those leaves'
//! rows, which the root's mirror cannot tell apart (a re-copy settles it, see the sink).
//!
//! [`Change::partition`]: crate::model::Change::partition

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::{Column, Incoming, Relation};

/// Where a leaf partition's changes go: its root, as the catalog described it when the leaf's
/// definition arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The leaf's own name, `schema.table` (recorded with each of its changes).
    pub leaf: String,
    pub root_relid: u32,
    pub root_schema: String,
    pub root_table: String,
    /// The root's columns in its order, with their attnums (the root's, not the leaf's).
    pub root_columns: Vec<(String, i16)>,
    /// Every leaf partition of the root (tables, at any depth), sorted: a TRUNCATE listing all of
    /// them empties the root.
    pub leaves: Vec<u32>,
}

/// The routes of leaf partitions, by leaf relid. A relid without a route is a table of its own.
pub type Routes = HashMap<u32, Arc<Route>>;

/// A leaf's definition as the root's, and where each routed position takes its value from.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    pub relation: Arc<Relation>,
    /// `from[i]`: the leaf's position of the routed relation's column `i`.
    from: Vec<usize>,
    /// The same for key-only old rows: the leaf's key position of routed key position `i`.
    key_from: Vec<usize>,
}

/// The root's definition for the changes of `leaf`: the root's relid and name, the leaf's columns
/// in the root's order (attnums the root's where the plugin sends attnums; columns the root does
/// not know, after a drop the catalog already reflects, keep their place at the end).
pub fn routed(leaf: &Relation, route: &Route) -> Routed {
    let mut from: Vec<usize> = route
        .root_columns
        .iter()
        .filter_map(|(name, _)| leaf.columns.iter().position(|c| &c.name == name))
        .collect();
    for i in 0..leaf.columns.len() {
        if !from.contains(&i) {
            from.push(i);
        }
    }
    let columns: Vec<Column> = from
        .iter()
        .map(|&i| {
            let c = &leaf.columns[i];
            let root_attnum = route
                .root_columns
                .iter()
                .find(|(n, _)| *n == c.name)
                .map(|(_, a)| *a);
            Column {
                attnum: c.attnum.and(root_attnum),
                ..c.clone()
            }
        })
        .collect();
    let leaf_keys: Vec<usize> = (0..leaf.columns.len())
        .filter(|&i| leaf.columns[i].key)
        .collect();
    let key_from = from
        .iter()
        .filter(|&&i| leaf.columns[i].key)
        .map(|i| leaf_keys.iter().position(|k| k == i).unwrap_or(0))
        .collect();
    Routed {
        relation: Arc::new(Relation {
            relid: route.root_relid,
            schema: route.root_schema.clone(),
            table: route.root_table.clone(),
            columns,
        }),
        from,
        key_from,
    }
}

impl Routed {
    /// A leaf row (every column, or the key columns only, as an old row may be) in the root's order.
    /// A row of any other width is left as it is: the sink reports the mismatch.
    pub fn row(&self, values: Vec<Incoming>) -> Vec<Incoming> {
        let order = match values.len() {
            n if n == self.from.len() => &self.from,
            n if n == self.key_from.len() => &self.key_from,
            _ => return values,
        };
        let mut slots: Vec<Option<Incoming>> = values.into_iter().map(Some).collect();
        order
            .iter()
            .map(|&i| slots[i].take().unwrap_or(Incoming::UnchangedToast))
            .collect()
    }
}

/// How a TRUNCATE listing `relids` reads once routed: the roots emptied whole, and the leaves
/// truncated alone (by root), each with its route.
pub struct TruncateSplit {
    /// Relids of tables of their own.
    pub tables: Vec<u32>,
    /// Roots every leaf of which is listed: one leaf relid each, to route the root's definition.
    pub whole_roots: Vec<u32>,
    /// Leaves listed without all their siblings.
    pub leaves: Vec<u32>,
}

pub fn split_truncate(relids: &[u32], routes: &Routes) -> TruncateSplit {
    let mut tables = Vec::new();
    let mut by_root: Vec<(u32, Vec<u32>)> = Vec::new();
    for &relid in relids {
        match routes.get(&relid) {
            None => tables.push(relid),
            Some(r) => match by_root.iter_mut().find(|(root, _)| *root == r.root_relid) {
                Some((_, listed)) => listed.push(relid),
                None => by_root.push((r.root_relid, vec![relid])),
            },
        }
    }
    let mut whole_roots = Vec::new();
    let mut leaves = Vec::new();
    for (_, listed) in by_root {
        let all = &routes[&listed[0]].leaves;
        if !all.is_empty() && all.iter().all(|l| listed.contains(l)) {
            whole_roots.push(listed[0]);
        } else {
            leaves.extend(listed);
        }
    }
    TruncateSplit {
        tables,
        whole_roots,
        leaves,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Value;

    fn col(name: &str, key: bool, attnum: i16) -> Column {
        Column {
            name: name.into(),
            type_name: "integer".into(),
            type_oid: 23,
            key,
            not_null: false,
            attnum: Some(attnum),
        }
    }

    fn route(leaves: Vec<u32>) -> Route {
        Route {
            leaf: "s.p1".into(),
            root_relid: 100,
            root_schema: "public".into(),
            root_table: "p".into(),
            root_columns: vec![("id".into(), 1), ("d".into(), 2), ("v".into(), 3)],
            leaves,
        }
    }

    fn v(i: i64) -> Incoming {
        Incoming::Value(Value::Int(i))
    }

    #[test]
    fn a_leaf_in_another_column_order_reads_as_the_root() {
        // Attached later: columns v, id, d with attnums of its own.
        let leaf = Relation {
            relid: 7,
            schema: "s".into(),
            table: "p1".into(),
            columns: vec![col("v", false, 1), col("id", true, 2), col("d", true, 4)],
        };
        let r = routed(&leaf, &route(vec![7]));
        let names: Vec<&str> = r.relation.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "d", "v"]);
        assert_eq!(r.relation.relid, 100);
        assert_eq!(
            (r.relation.schema.as_str(), r.relation.table.as_str()),
            ("public", "p")
        );
        let attnums: Vec<Option<i16>> = r.relation.columns.iter().map(|c| c.attnum).collect();
        assert_eq!(attnums, [Some(1), Some(2), Some(3)]);
        assert_eq!(r.row(vec![v(30), v(10), v(20)]), vec![v(10), v(20), v(30)]);
        // A key-only old row: leaf key order (id, d) to root key order (id, d).
        assert_eq!(r.row(vec![v(10), v(20)]), vec![v(10), v(20)]);
        assert_eq!(r.row(vec![v(1)]), vec![v(1)], "other widths untouched");
    }

    #[test]
    fn key_only_rows_follow_the_root_order_of_the_keys() {
        let leaf = Relation {
            relid: 7,
            schema: "s".into(),
            table: "p1".into(),
            columns: vec![col("d", true, 1), col("v", false, 2), col("id", true, 3)],
        };
        let r = routed(&leaf, &route(vec![7]));
        // Leaf keys in leaf order: d, id; root order: id, d.
        assert_eq!(r.row(vec![v(20), v(10)]), vec![v(10), v(20)]);
    }

    #[test]
    fn pgoutput_definitions_stay_without_attnums_and_unknown_columns_go_last() {
        let mut leaf = Relation {
            relid: 7,
            schema: "s".into(),
            table: "p1".into(),
            columns: vec![
                col("id", true, 1),
                col("gone", false, 2),
                col("v", false, 3),
            ],
        };
        for c in &mut leaf.columns {
            c.attnum = None;
        }
        let r = routed(&leaf, &route(vec![7]));
        let cols: Vec<(&str, Option<i16>)> = r
            .relation
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.attnum))
            .collect();
        assert_eq!(cols, [("id", None), ("v", None), ("gone", None)]);
        assert_eq!(r.row(vec![v(1), v(2), v(3)]), vec![v(1), v(3), v(2)]);
    }

    #[test]
    fn a_truncate_of_every_leaf_empties_the_root_and_of_some_names_them() {
        let mut routes = Routes::new();
        for leaf in [7, 8, 9] {
            routes.insert(leaf, Arc::new(route(vec![7, 8, 9])));
        }
        let all = split_truncate(&[5, 9, 7, 8], &routes);
        assert_eq!(all.tables, [5]);
        assert_eq!(all.whole_roots.len(), 1);
        assert!(all.leaves.is_empty());
        let some = split_truncate(&[8, 9], &routes);
        assert!(some.whole_roots.is_empty());
        assert_eq!(some.leaves, [8, 9]);
    }
}
