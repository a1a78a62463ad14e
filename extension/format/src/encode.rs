//! Writing records. Used by the plugin in its hot path, so it appends straight into one reusable
//! buffer with `rmp`'s primitive writers and never builds intermediate values.
//!
//! A record is written as a header (which fixes the array length) followed by its variable parts
//! (tuples, columns) and, inside a stream block, the trailing subtransaction xid. The helpers here
//! keep the element counts consistent with `docs/FORMAT.md`; the round-trip tests in [`crate::decode`]
//! check that every record written here reads back the same.

use crate::{decimal, OldKind, RecordKind, ReplicaIdentity, EXT_DECIMAL, EXT_UNCHANGED_TOAST};
use rmp::encode as mp;

pub use crate::decimal::DecimalError;

/// Appends MessagePack to a byte buffer. Writing to a `Vec<u8>` cannot fail (allocation failure
/// aborts), which is why the `Result`s of `rmp` are discarded in [`Writer::ok`].
pub struct Writer<'a> {
    pub buf: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        Writer { buf }
    }

    #[inline]
    fn ok<T, E>(_: Result<T, E>) {}

    #[inline]
    pub fn array(&mut self, len: u32) {
        Self::ok(mp::write_array_len(self.buf, len));
    }
    #[inline]
    pub fn kind(&mut self, kind: RecordKind) {
        Self::ok(mp::write_pfix(self.buf, kind as u8));
    }
    #[inline]
    pub fn nil(&mut self) {
        Self::ok(mp::write_nil(self.buf));
    }
    #[inline]
    pub fn bool(&mut self, v: bool) {
        Self::ok(mp::write_bool(self.buf, v));
    }
    #[inline]
    pub fn int(&mut self, v: i64) {
        Self::ok(mp::write_sint(self.buf, v));
    }
    #[inline]
    pub fn uint(&mut self, v: u64) {
        Self::ok(mp::write_uint(self.buf, v));
    }
    #[inline]
    pub fn f32(&mut self, v: f32) {
        Self::ok(mp::write_f32(self.buf, v));
    }
    #[inline]
    pub fn f64(&mut self, v: f64) {
        Self::ok(mp::write_f64(self.buf, v));
    }
    /// A str. The caller guarantees UTF-8 (the plugin converts from the database encoding first).
    #[inline]
    pub fn str_bytes(&mut self, utf8: &[u8]) {
        Self::ok(mp::write_str_len(self.buf, utf8.len() as u32));
        self.buf.extend_from_slice(utf8);
    }
    #[inline]
    pub fn str(&mut self, s: &str) {
        self.str_bytes(s.as_bytes());
    }
    #[inline]
    pub fn bin(&mut self, v: &[u8]) {
        Self::ok(mp::write_bin_len(self.buf, v.len() as u32));
        self.buf.extend_from_slice(v);
    }
    /// The marker for a TOASTed value that did not change and so is not in the WAL.
    #[inline]
    pub fn unchanged_toast(&mut self) {
        Self::ok(mp::write_ext_meta(self.buf, 0, EXT_UNCHANGED_TOAST));
    }
    /// A numeric from its canonical text (`numeric_out`).
    pub fn decimal_text(&mut self, text: &[u8]) -> Result<(), DecimalError> {
        let mut packed = Vec::with_capacity(text.len() / 2 + 1);
        decimal::pack_into(text, &mut packed)?;
        Self::ok(mp::write_ext_meta(
            self.buf,
            packed.len() as u32,
            EXT_DECIMAL,
        ));
        self.buf.extend_from_slice(&packed);
        Ok(())
    }
    /// Starts an array value: `[dims, e1, …, en]` where dims is `[lower1, len1, lower2, len2, …]`.
    /// The caller then writes `n_elements` values in row-major order.
    pub fn array_value_header(&mut self, dims: &[(i32, i32)], n_elements: u32) {
        self.array(n_elements.saturating_add(1));
        self.array(dims.len() as u32 * 2);
        for &(lower, len) in dims {
            self.int(lower as i64);
            self.int(len as i64);
        }
    }

    // ---- records -------------------------------------------------------------------------------

    pub fn begin(&mut self, xid: u32, final_lsn: u64, commit_time: i64) {
        self.array(4);
        self.kind(RecordKind::Begin);
        self.uint(xid as u64);
        self.uint(final_lsn);
        self.int(commit_time);
    }

    pub fn commit(&mut self, commit_lsn: u64, end_lsn: u64, commit_time: i64) {
        self.array(4);
        self.kind(RecordKind::Commit);
        self.uint(commit_lsn);
        self.uint(end_lsn);
        self.int(commit_time);
    }

    pub fn origin(&mut self, origin_lsn: u64, name: &str) {
        self.array(3);
        self.kind(RecordKind::Origin);
        self.uint(origin_lsn);
        self.str(name);
    }

    /// RELATION header; follow with `n_columns` calls to [`Writer::column`].
    pub fn relation_header(
        &mut self,
        relid: u32,
        schema: &[u8],
        table: &[u8],
        identity: ReplicaIdentity,
        n_columns: u32,
    ) {
        self.array(6);
        self.kind(RecordKind::Relation);
        self.uint(relid as u64);
        self.str_bytes(schema);
        self.str_bytes(table);
        self.uint(identity as u8 as u64);
        self.array(n_columns);
    }

    pub fn column(&mut self, c: &ColumnOut<'_>) {
        self.array(8);
        self.int(c.attnum as i64);
        self.str_bytes(c.name);
        self.uint(c.type_oid as u64);
        self.int(c.typmod as i64);
        self.str_bytes(c.type_name);
        self.uint(c.flags as u64);
        self.uint(c.kind as u64);
        self.uint(c.elem_kind as u64);
    }

    /// INSERT header; follow with the new tuple, then [`Writer::stream_xid`] when streaming.
    pub fn insert_header(&mut self, relid: u32, streaming: bool) {
        self.array(3 + streaming as u32);
        self.kind(RecordKind::Insert);
        self.uint(relid as u64);
    }

    /// UPDATE header; follow with the old part ([`Writer::no_old`] or [`Writer::old_header`] and a
    /// tuple), the new tuple, then the stream xid when streaming.
    pub fn update_header(&mut self, relid: u32, streaming: bool) {
        self.array(4 + streaming as u32);
        self.kind(RecordKind::Update);
        self.uint(relid as u64);
    }

    /// DELETE header; follow with the old part, then the stream xid when streaming.
    pub fn delete_header(&mut self, relid: u32, streaming: bool) {
        self.array(3 + streaming as u32);
        self.kind(RecordKind::Delete);
        self.uint(relid as u64);
    }

    pub fn no_old(&mut self) {
        self.nil();
    }

    /// `[kind, tuple]`: follow with the tuple.
    pub fn old_header(&mut self, kind: OldKind) {
        self.array(2);
        self.uint(kind as u8 as u64);
    }

    /// A tuple is an array with one value per RELATION column, in RELATION order.
    pub fn tuple_header(&mut self, n_values: u32) {
        self.array(n_values);
    }

    pub fn truncate(
        &mut self,
        cascade: bool,
        restart_identity: bool,
        relids: &[u32],
        xid: Option<u32>,
    ) {
        self.array(3 + xid.is_some() as u32);
        self.kind(RecordKind::Truncate);
        self.uint(cascade as u64 | (restart_identity as u64) << 1);
        self.array(relids.len() as u32);
        for &r in relids {
            self.uint(r as u64);
        }
        self.stream_xid(xid);
    }

    pub fn message(
        &mut self,
        lsn: u64,
        transactional: bool,
        prefix: &[u8],
        content: &[u8],
        xid: Option<u32>,
    ) {
        self.array(5 + xid.is_some() as u32);
        self.kind(RecordKind::Message);
        self.uint(lsn);
        self.bool(transactional);
        self.str_bytes(prefix);
        self.bin(content);
        self.stream_xid(xid);
    }

    pub fn ddl(&mut self, lsn: u64, payload_json: &[u8], xid: Option<u32>) {
        self.array(3 + xid.is_some() as u32);
        self.kind(RecordKind::Ddl);
        self.uint(lsn);
        self.str_bytes(payload_json);
        self.stream_xid(xid);
    }

    pub fn stream_start(&mut self, xid: u32, first_segment: bool) {
        self.array(3);
        self.kind(RecordKind::StreamStart);
        self.uint(xid as u64);
        self.bool(first_segment);
    }

    pub fn stream_stop(&mut self) {
        self.array(1);
        self.kind(RecordKind::StreamStop);
    }

    pub fn stream_commit(&mut self, xid: u32, commit_lsn: u64, end_lsn: u64, commit_time: i64) {
        self.array(5);
        self.kind(RecordKind::StreamCommit);
        self.uint(xid as u64);
        self.uint(commit_lsn);
        self.uint(end_lsn);
        self.int(commit_time);
    }

    pub fn stream_abort(&mut self, xid: u32, subxid: u32) {
        self.array(3);
        self.kind(RecordKind::StreamAbort);
        self.uint(xid as u64);
        self.uint(subxid as u64);
    }

    /// The trailing (sub)transaction xid of a change inside a stream block.
    #[inline]
    pub fn stream_xid(&mut self, xid: Option<u32>) {
        if let Some(x) = xid {
            self.uint(x as u64);
        }
    }
}

/// One RELATION column as the encoder needs it.
#[derive(Debug, Clone, Copy)]
pub struct ColumnOut<'a> {
    pub attnum: i16,
    pub name: &'a [u8],
    pub type_oid: u32,
    pub typmod: i32,
    pub type_name: &'a [u8],
    pub flags: u8,
    pub kind: crate::ValueKind,
    pub elem_kind: crate::ValueKind,
}
