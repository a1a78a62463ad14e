//! One decoding session's state (`output_plugin_private`) and its output buffer.
//!
//! Records are appended to one reusable buffer and handed to PostgreSQL in writes of about
//! `write_batch_bytes`, and always at the end of a transaction, a stream block or a non-transactional
//! message, so a write never waits for data that may not come.

use crate::options::Options;
use crate::relation::RelCache;
use crate::text::DbEncoding;
use pgrx::pg_sys;
use std::collections::{HashMap, HashSet};

/// A BEGIN held back until the transaction's first emitted change (`skip_empty_xacts`).
#[derive(Debug, Clone, Copy)]
pub struct PendingBegin {
    pub xid: u32,
    pub final_lsn: u64,
    pub commit_time: i64,
    pub origin_id: u16,
    pub origin_lsn: u64,
}

pub struct Session {
    pub opts: Options,
    pub db: DbEncoding,
    pub rels: RelCache,
    /// Reset after every change so a million-row transaction runs in flat memory.
    pub change_cxt: pg_sys::MemoryContext,
    pub out: Vec<u8>,
    pub values: Vec<pg_sys::Datum>,
    pub nulls: Vec<bool>,
    pub pending_begin: Option<PendingBegin>,
    pub begin_sent: bool,
    /// Top-level xid of the stream block in progress, if any.
    pub stream_xid: Option<u32>,
    /// Transactions of which at least one block was streamed.
    pub streamed: HashSet<u32>,
    /// Payloads written to the protected DDL table, per top-level xid, with the subtransaction that
    /// wrote them, waiting for their message.
    pub ddl_payloads: HashMap<u32, Vec<(Vec<u8>, u32)>>,
    /// Changes decoded so far, for the `fail_after_changes` failpoint.
    #[cfg(feature = "failpoints")]
    pub changes_seen: u64,
    pub skipped_changes: u64,
}

impl Session {
    /// # Safety
    /// `mcxt` must be a valid memory context that outlives the session (the decoding context's).
    pub unsafe fn new(opts: Options, mcxt: pg_sys::MemoryContext) -> Self {
        let change_cxt = {
            pg_sys::AllocSetContextCreateInternal(
                mcxt,
                c"figoutput change".as_ptr(),
                pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
                pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
                pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
            )
        };
        let db = DbEncoding::current();
        Session {
            db,
            rels: RelCache::new(mcxt, db),
            change_cxt,
            out: Vec::with_capacity(opts.write_batch_bytes.max(1024) + 1024),
            values: Vec::new(),
            nulls: Vec::new(),
            pending_begin: None,
            begin_sent: false,
            stream_xid: None,
            streamed: HashSet::new(),
            ddl_payloads: HashMap::new(),
            #[cfg(feature = "failpoints")]
            changes_seen: 0,
            skipped_changes: 0,
            opts,
        }
    }

    /// Hands the buffered records to PostgreSQL as one write.
    ///
    /// # Safety
    /// Only inside an output plugin callback (`ctx->accept_writes`).
    pub unsafe fn flush(&mut self, ctx: *mut pg_sys::LogicalDecodingContext, last_write: bool) {
        if self.out.is_empty() {
            return;
        }
        // The SQL decoding functions copy each write into memory of the current context; writing
        // from the per-change context (reset right after) keeps a long call's memory flat.
        let old = pg_sys::MemoryContextSwitchTo(self.change_cxt);
        pg_sys::OutputPluginPrepareWrite(ctx, last_write);
        pg_sys::appendBinaryStringInfo(
            (*ctx).out,
            self.out.as_ptr() as *const std::ffi::c_char,
            self.out.len() as i32,
        );
        pg_sys::OutputPluginWrite(ctx, last_write);
        pg_sys::MemoryContextSwitchTo(old);
        pg_sys::MemoryContextReset(self.change_cxt);
        self.out.clear();
    }

    /// Flushes when the batch is full (or batching is off).
    ///
    /// # Safety
    /// As [`Session::flush`].
    pub unsafe fn maybe_flush(&mut self, ctx: *mut pg_sys::LogicalDecodingContext) {
        if self.out.len() >= self.opts.write_batch_bytes {
            self.flush(ctx, false);
        }
    }
}
