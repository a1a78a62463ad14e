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
    /// The row being encoded, deformed into datums (reused from change to change).
    pub row: Row,
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

/// A heap tuple split into one datum and one null flag per attribute of its descriptor.
#[derive(Default)]
pub struct Row {
    values: Vec<pg_sys::Datum>,
    nulls: Vec<bool>,
}

impl Row {
    /// Deforms `tuple` and returns its datums and null flags, one per attribute of `tupdesc`.
    /// By-reference datums point into the tuple: they are valid as long as it is.
    ///
    /// # Safety
    /// `tuple` must be a valid, non-null heap tuple of a relation that `tupdesc` describes, and
    /// both must stay valid while the returned datums are used.
    pub unsafe fn deform(
        &mut self,
        tuple: pg_sys::HeapTuple,
        tupdesc: pg_sys::TupleDesc,
    ) -> (&[pg_sys::Datum], &[bool]) {
        // SAFETY: `tupdesc` is a valid descriptor (the caller's contract).
        let natts = usize::try_from(unsafe { (*tupdesc).natts }).unwrap_or(0);
        // Every entry is written below, so only the length matters.
        self.values.resize(natts, pg_sys::Datum::from(0));
        self.nulls.resize(natts, true);
        // SAFETY: `tuple` is a tuple of the relation `tupdesc` describes (the caller's contract);
        // both arrays hold `natts` entries, and heap_deform_tuple writes each of them (attributes
        // past the tuple's own count get their missing value, or NULL).
        unsafe {
            pg_sys::heap_deform_tuple(
                tuple,
                tupdesc,
                self.values.as_mut_ptr(),
                self.nulls.as_mut_ptr(),
            )
        };
        (&self.values, &self.nulls)
    }
}

impl Session {
    /// # Safety
    /// `mcxt` must be a valid memory context that outlives the session (the decoding context's).
    pub unsafe fn new(opts: Options, mcxt: pg_sys::MemoryContext) -> Self {
        // SAFETY: `mcxt` is a valid context (the caller's contract); the name is a static C string,
        // as AllocSetContextCreate requires (it keeps the pointer). The new context is a child of
        // `mcxt`: PostgreSQL frees it with its parent, so the session never deletes it.
        let change_cxt = unsafe {
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
            row: Row::default(),
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
        // appendBinaryStringInfo takes an int length. A batch is at most write_batch_bytes (64 MiB)
        // plus one change, but one row of several large values can pass 2 GiB: refuse it rather
        // than let the length wrap. (PostgreSQL itself refuses a write above 1 GiB.)
        let Ok(len) = i32::try_from(self.out.len()) else {
            pgrx::error!(
                "figoutput: a write of {} bytes is too large for PostgreSQL to send (at most 1 GiB): a row this large cannot be decoded",
                self.out.len()
            )
        };
        // The SQL decoding functions copy each write into memory of the current context; writing
        // from the per-change context (reset right after) keeps a long call's memory flat.
        // SAFETY: `change_cxt` is this session's child of the decoding context, alive as long as
        // the session. The previous context is restored below before anything else allocates.
        let old = unsafe { pg_sys::MemoryContextSwitchTo(self.change_cxt) };
        // SAFETY: the caller is an output plugin callback, so `ctx` is the live decoding context
        // with `accept_writes` set, and `ctx->out` is its StringInfo, which OutputPluginPrepareWrite
        // has just reset for this write. `self.out` is a live buffer of `len` bytes, copied (not
        // kept) by appendBinaryStringInfo before OutputPluginWrite hands the StringInfo on.
        unsafe {
            pg_sys::OutputPluginPrepareWrite(ctx, last_write);
            pg_sys::appendBinaryStringInfo(
                (*ctx).out,
                self.out.as_ptr() as *const std::ffi::c_char,
                len,
            );
            pg_sys::OutputPluginWrite(ctx, last_write);
        }
        // SAFETY: `old` was current when this function began and is alive (a context that outlives
        // the callback); nothing allocated in `change_cxt` is referenced after the reset: the
        // write was copied out, and callers keep no pointers into it across a flush.
        unsafe {
            pg_sys::MemoryContextSwitchTo(old);
            pg_sys::MemoryContextReset(self.change_cxt);
        }
        self.out.clear();
    }

    /// Flushes when the batch is full (or batching is off).
    ///
    /// # Safety
    /// As [`Session::flush`].
    pub unsafe fn maybe_flush(&mut self, ctx: *mut pg_sys::LogicalDecodingContext) {
        if self.out.len() >= self.opts.write_batch_bytes {
            // SAFETY: this function's own contract, passed on.
            unsafe { self.flush(ctx, false) };
        }
    }
}
