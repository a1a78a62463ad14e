//! CTID ranges: how a large table is split so several connections read it at once.
//!
//! Chunk `i` holds the rows stored in heap blocks `[i·B, (i+1)·B)`, where `B` (blocks per chunk) is
//! fixed when a load starts and kept with it, so a resumed load means the same ranges by the same
//! numbers. The last chunk has no upper bound: rows that land in new blocks while the copy runs are
//! still read. PostgreSQL 14 and newer read a range with a TID range scan (only those blocks); older
//! servers would scan the whole table for each chunk, so there a table is one chunk.

/// The server version from which `ctid` ranges are read by a TID range scan.
pub const TID_RANGE_SCAN_VERSION: u32 = 140000;

/// One CTID range of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub index: u32,
    /// First block.
    pub from: u64,
    /// End block (exclusive); `None` for the last chunk: to the end of the table.
    pub to: Option<u64>,
}

impl Chunk {
    /// The `WHERE` condition selecting this chunk's rows (empty for a whole table).
    pub fn condition(&self) -> String {
        let lower = (self.from > 0).then(|| format!("ctid >= '({},0)'::tid", self.from));
        let upper = self.to.map(|t| format!("ctid < '({t},0)'::tid"));
        match (lower, upper) {
            (Some(l), Some(u)) => format!("{l} AND {u}"),
            (Some(c), None) | (None, Some(c)) => c,
            (None, None) => String::new(),
        }
    }
}

/// Blocks per chunk for `chunk_bytes` of heap (`block_size`: the server's, 8192 by default); at
/// least 1.
pub fn blocks_per_chunk(chunk_bytes: u64, block_size: u64) -> u64 {
    (chunk_bytes / block_size.max(1)).max(1)
}

/// The chunks of a table of `blocks` heap blocks, `per_chunk` blocks each; one chunk covering the
/// whole table when `per_chunk` is 0 (ranges not used).
pub fn plan(blocks: u64, per_chunk: u64) -> Vec<Chunk> {
    if per_chunk == 0 || blocks <= per_chunk {
        return vec![Chunk {
            index: 0,
            from: 0,
            to: None,
        }];
    }
    let n = blocks.div_ceil(per_chunk);
    (0..n)
        .map(|i| Chunk {
            index: i as u32,
            from: i * per_chunk,
            to: (i + 1 < n).then_some((i + 1) * per_chunk),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_small_table_is_one_open_chunk() {
        assert_eq!(
            plan(3, 10),
            vec![Chunk {
                index: 0,
                from: 0,
                to: None
            }]
        );
        assert_eq!(plan(0, 10).len(), 1);
        assert_eq!(plan(1000, 0).len(), 1);
        assert_eq!(plan(3, 10)[0].condition(), "");
    }

    #[test]
    fn conditions_are_tid_ranges() {
        let c = plan(25, 10);
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].condition(), "ctid < '(10,0)'::tid");
        assert_eq!(
            c[1].condition(),
            "ctid >= '(10,0)'::tid AND ctid < '(20,0)'::tid"
        );
        assert_eq!(c[2].condition(), "ctid >= '(20,0)'::tid");
        assert_eq!(blocks_per_chunk(64 << 20, 8192), 8192);
        assert_eq!(blocks_per_chunk(1, 8192), 1);
    }

    proptest! {
        /// Every block belongs to exactly one chunk, and the last one is open.
        #[test]
        fn chunks_cover_every_block_once(blocks in 0u64..100_000, per in 1u64..5_000) {
            let c = plan(blocks, per);
            prop_assert!(c.last().unwrap().to.is_none());
            prop_assert_eq!(c[0].from, 0);
            for w in c.windows(2) {
                prop_assert_eq!(w[0].to, Some(w[1].from));
                prop_assert_eq!(w[0].index + 1, w[1].index);
            }
        }
    }
}
