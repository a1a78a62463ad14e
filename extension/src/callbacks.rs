//! The output plugin callbacks: one function per callback, each guarded by `#[pg_guard]` so that a
//! Rust panic or a PostgreSQL ERROR inside becomes an ERROR for this walsender (or SQL call), never a
//! crash of the server. Work per change runs in a memory context that is reset after the change.
//!
//! ```text
//! begin ─▶ (first emitted change: BEGIN [ORIGIN]) ─▶ RELATION? ─▶ INSERT/UPDATE/DELETE/TRUNCATE ─▶ commit: COMMIT
//! stream_start ─▶ STREAM_START ─▶ changes (+ subxact xid) ─▶ stream_stop: STREAM_STOP
//! stream_commit: STREAM_COMMIT          stream_abort: STREAM_ABORT
//! ```

use crate::options::Options;
use crate::relation::{RelEntry, Role};
use crate::session::{PendingBegin, Session};
use crate::values::is_unchanged_toast;
use fig_format::encode::Writer;
use fig_format::{OldKind, ReplicaIdentity, DDL_MESSAGE_PREFIX};
use pgrx::pg_guard;
use pgrx::pg_sys;
use std::ffi::CStr;

/// Skipped changes between two progress reports, so the walsender keeps answering keepalives while
/// it filters out a write-heavy table (what pgoutput does too).
const PROGRESS_EVERY: u64 = 100;

unsafe fn session<'a>(ctx: *mut pg_sys::LogicalDecodingContext) -> &'a mut Session {
    let p = (*ctx).output_plugin_private as *mut Session;
    match p.as_mut() {
        Some(s) => s,
        None => {
            pgrx::error!("figoutput: decoding callback without a session (startup did not run)")
        }
    }
}

// ---- lifecycle ---------------------------------------------------------------------------------

#[pg_guard]
pub unsafe extern "C-unwind" fn startup(
    ctx: *mut pg_sys::LogicalDecodingContext,
    options: *mut pg_sys::OutputPluginOptions,
    _is_init: bool,
) {
    let mut pairs: Vec<(String, Option<String>)> = Vec::new();
    for elem in pgrx::PgList::<pg_sys::DefElem>::from_pg((*ctx).output_plugin_options).iter_ptr() {
        let name = CStr::from_ptr((*elem).defname)
            .to_string_lossy()
            .into_owned();
        let value = if (*elem).arg.is_null() {
            None
        } else {
            Some(
                CStr::from_ptr(pg_sys::defGetString(elem))
                    .to_string_lossy()
                    .into_owned(),
            )
        };
        pairs.push((name, value));
    }
    let opts = match Options::parse(pairs.iter().map(|(n, v)| (n.as_str(), v.as_deref()))) {
        Ok(o) => o,
        Err(e) => {
            pgrx::ereport!(
                ERROR,
                pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                e.to_string()
            );
        }
    };
    (*options).output_type = pg_sys::OutputPluginOutputType::OUTPUT_PLUGIN_BINARY_OUTPUT;
    (*options).receive_rewrites = false;
    #[cfg(not(feature = "pg13"))]
    {
        (*ctx).streaming &= opts.streaming;
    }
    crate::relation::register_invalidation_callbacks();
    install_session(ctx, opts);
}

/// Stores the session in `output_plugin_private` and arranges for it to be dropped with the decoding
/// context, so an ERROR that skips the shutdown callback (SQL decoding functions) leaks nothing.
unsafe fn install_session(ctx: *mut pg_sys::LogicalDecodingContext, opts: Options) {
    let mcxt = (*ctx).context;
    let session = Box::into_raw(Box::new(Session::new(opts, mcxt)));
    (*ctx).output_plugin_private = session as *mut std::ffi::c_void;
    let cb =
        pg_sys::MemoryContextAllocZero(mcxt, std::mem::size_of::<pg_sys::MemoryContextCallback>())
            as *mut pg_sys::MemoryContextCallback;
    (*cb).func = Some(drop_session);
    (*cb).arg = ctx as *mut std::ffi::c_void;
    pg_sys::MemoryContextRegisterResetCallback(mcxt, cb);
}

#[pg_guard]
unsafe extern "C-unwind" fn drop_session(arg: *mut std::ffi::c_void) {
    let ctx = arg as *mut pg_sys::LogicalDecodingContext;
    let p = (*ctx).output_plugin_private as *mut Session;
    if !p.is_null() {
        (*ctx).output_plugin_private = std::ptr::null_mut();
        drop(Box::from_raw(p));
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn shutdown(ctx: *mut pg_sys::LogicalDecodingContext) {
    drop_session(ctx as *mut std::ffi::c_void);
}

#[pg_guard]
pub unsafe extern "C-unwind" fn filter_by_origin(
    ctx: *mut pg_sys::LogicalDecodingContext,
    origin_id: pg_sys::RepOriginId,
) -> bool {
    session(ctx).opts.only_local_origin && origin_id != 0
}

// ---- transactions ------------------------------------------------------------------------------

#[cfg(any(feature = "pg13", feature = "pg14"))]
unsafe fn commit_time(txn: *mut pg_sys::ReorderBufferTXN) -> i64 {
    (*txn).commit_time
}
#[cfg(not(any(feature = "pg13", feature = "pg14")))]
unsafe fn commit_time(txn: *mut pg_sys::ReorderBufferTXN) -> i64 {
    (*txn).xact_time.commit_time
}

#[pg_guard]
pub unsafe extern "C-unwind" fn begin(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
) {
    let s = session(ctx);
    s.pending_begin = Some(PendingBegin {
        xid: (*txn).xid.into_inner(),
        final_lsn: (*txn).final_lsn,
        commit_time: commit_time(txn),
        origin_id: (*txn).origin_id,
        origin_lsn: (*txn).origin_lsn,
    });
    s.begin_sent = false;
    if !s.opts.skip_empty_xacts {
        send_begin(s);
    }
}

/// Writes the held-back BEGIN (and ORIGIN) once the transaction has something to say.
unsafe fn send_begin(s: &mut Session) {
    let Some(b) = s.pending_begin.take() else {
        return;
    };
    let mut w = Writer::new(&mut s.out);
    w.begin(b.xid, b.final_lsn, b.commit_time);
    if s.opts.include_origin && b.origin_id != 0 {
        let mut name: *mut std::ffi::c_char = std::ptr::null_mut();
        if pg_sys::replorigin_by_oid(b.origin_id, true, &mut name) && !name.is_null() {
            w.origin(b.origin_lsn, &CStr::from_ptr(name).to_string_lossy());
        }
    }
    s.begin_sent = true;
}

#[pg_guard]
pub unsafe extern "C-unwind" fn commit(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    commit_lsn: pg_sys::XLogRecPtr,
) {
    let s = session(ctx);
    s.ddl_payloads.remove(&(*txn).xid.into_inner());
    if !s.begin_sent {
        // Nothing was emitted: say so, so the slot can advance past a filtered transaction.
        s.pending_begin = None;
        update_progress(ctx, true);
        return;
    }
    Writer::new(&mut s.out).commit(commit_lsn, (*txn).end_lsn, commit_time(txn));
    s.begin_sent = false;
    s.flush(ctx, true);
}

#[cfg(any(feature = "pg13", feature = "pg14"))]
unsafe fn update_progress(ctx: *mut pg_sys::LogicalDecodingContext, _skipped_xact: bool) {
    pg_sys::OutputPluginUpdateProgress(ctx);
}
#[cfg(not(any(feature = "pg13", feature = "pg14")))]
unsafe fn update_progress(ctx: *mut pg_sys::LogicalDecodingContext, skipped_xact: bool) {
    pg_sys::OutputPluginUpdateProgress(ctx, skipped_xact);
}

// ---- changes -----------------------------------------------------------------------------------

#[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16"))]
unsafe fn heap_tuple(t: *mut pg_sys::ReorderBufferTupleBuf) -> pg_sys::HeapTuple {
    if t.is_null() {
        std::ptr::null_mut()
    } else {
        &mut (*t).tuple
    }
}
#[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16")))]
unsafe fn heap_tuple(t: pg_sys::HeapTuple) -> pg_sys::HeapTuple {
    t
}

#[pg_guard]
pub unsafe extern "C-unwind" fn change(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    rel: pg_sys::Relation,
    change: *mut pg_sys::ReorderBufferChange,
) {
    let s = session(ctx);
    #[cfg(feature = "failpoints")]
    fail_after_changes(s);
    use pg_sys::ReorderBufferChangeType as T;
    let action = (*change).action;
    let tp = &(*change).data.tp;
    let (new, old) = (heap_tuple(tp.newtuple), heap_tuple(tp.oldtuple));
    let opts: &Options = &s.opts;
    let entry: *mut RelEntry = s.rels.get(rel, opts);
    let wanted = match (*entry).role {
        Role::DdlLog => {
            if action == T::REORDER_BUFFER_CHANGE_INSERT && !new.is_null() {
                let subxid = (*(*change).txn).xid.into_inner();
                remember_ddl_payload(s, rel, (*txn).xid.into_inner(), subxid, new);
            }
            false
        }
        Role::Skip => false,
        Role::Data(a) => match action {
            T::REORDER_BUFFER_CHANGE_INSERT => a.insert,
            T::REORDER_BUFFER_CHANGE_UPDATE => a.update,
            T::REORDER_BUFFER_CHANGE_DELETE => a.delete,
            _ => false,
        },
    };
    if !wanted {
        s.skipped_changes += 1;
        if s.skipped_changes % PROGRESS_EVERY == 0 {
            update_progress(ctx, false);
        }
        return;
    }

    let old_cxt = pg_sys::MemoryContextSwitchTo(s.change_cxt);
    let relid = (*rel).rd_id.to_u32();
    let stream_xid = s.stream_xid.map(|_| (*(*change).txn).xid.into_inner());
    send_begin(s);
    send_relation(s, &mut *entry);
    let tupdesc = (*rel).rd_att;
    let result = {
        let entry = &mut *entry;
        match action {
            T::REORDER_BUFFER_CHANGE_INSERT => {
                Writer::new(&mut s.out).insert_header(relid, stream_xid.is_some());
                write_tuple(s, entry, tupdesc, new, false)
            }
            T::REORDER_BUFFER_CHANGE_UPDATE => {
                Writer::new(&mut s.out).update_header(relid, stream_xid.is_some());
                write_old(s, entry, tupdesc, old)
                    .and_then(|_| write_tuple(s, entry, tupdesc, new, false))
            }
            _ => {
                Writer::new(&mut s.out).delete_header(relid, stream_xid.is_some());
                write_old(s, entry, tupdesc, old)
            }
        }
    };
    if let Err(e) = result {
        let name = CStr::from_ptr((*(*rel).rd_rel).relname.data.as_ptr()).to_string_lossy();
        pgrx::ereport!(
            ERROR,
            pgrx::PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("figoutput: cannot encode a row of table \"{name}\": {e}")
        );
    }
    Writer::new(&mut s.out).stream_xid(stream_xid);
    pg_sys::MemoryContextSwitchTo(old_cxt);
    pg_sys::MemoryContextReset(s.change_cxt);
    s.maybe_flush(ctx);
}

/// The `fail_after_changes` failpoint (cargo feature `failpoints`, tests only): an ERROR, raised as
/// a Rust panic as a plugin bug would be, at the chosen change.
#[cfg(feature = "failpoints")]
fn fail_after_changes(s: &mut Session) {
    s.changes_seen += 1;
    if s.opts
        .fail_after_changes
        .is_some_and(|n| s.changes_seen > n)
    {
        panic!(
            "figoutput: fail_after_changes reached after {} changes (a test option)",
            s.changes_seen - 1
        );
    }
}

unsafe fn send_relation(s: &mut Session, entry: &mut RelEntry) {
    if !entry.sent {
        s.out.extend_from_slice(&entry.relation_record);
        entry.sent = true;
    }
}

unsafe fn write_old(
    s: &mut Session,
    entry: &mut RelEntry,
    tupdesc: pg_sys::TupleDesc,
    old: pg_sys::HeapTuple,
) -> Result<(), crate::values::ValueError> {
    if old.is_null() {
        Writer::new(&mut s.out).no_old();
        return Ok(());
    }
    let (kind, key_only) = if entry.identity == ReplicaIdentity::Full {
        (OldKind::Full, false)
    } else {
        (OldKind::Key, true)
    };
    Writer::new(&mut s.out).old_header(kind);
    write_tuple(s, entry, tupdesc, old, key_only)
}

/// Writes one tuple: a value per emitted column, in RELATION order. With `key_only`, columns outside
/// the replica identity are written as nil (the WAL's old key tuple does not carry them).
unsafe fn write_tuple(
    s: &mut Session,
    entry: &mut RelEntry,
    tupdesc: pg_sys::TupleDesc,
    tuple: pg_sys::HeapTuple,
    key_only: bool,
) -> Result<(), crate::values::ValueError> {
    let natts = (*tupdesc).natts as usize;
    s.values.resize(natts, pg_sys::Datum::from(0));
    s.nulls.resize(natts, true);
    pg_sys::heap_deform_tuple(tuple, tupdesc, s.values.as_mut_ptr(), s.nulls.as_mut_ptr());
    let db = s.db;
    let mut w = Writer::new(&mut s.out);
    w.tuple_header(entry.columns.len() as u32);
    for col in entry.columns.iter_mut() {
        let i = col.att_index;
        if s.nulls[i] || (key_only && !col.key) {
            w.nil();
        } else if col.is_varlena && is_unchanged_toast(s.values[i]) {
            w.unchanged_toast();
        } else {
            col.enc.encode(&mut w, s.values[i], db)?;
        }
    }
    Ok(())
}

/// Keeps the payload of a row the extension's DDL trigger wrote, to authenticate its message.
unsafe fn remember_ddl_payload(
    s: &mut Session,
    rel: pg_sys::Relation,
    xid: u32,
    subxid: u32,
    tuple: pg_sys::HeapTuple,
) {
    let tupdesc = (*rel).rd_att;
    let desc = pgrx::PgTupleDesc::from_pg_unchecked(tupdesc);
    let Some(idx) = (0..desc.len()).find(|&i| {
        desc.get(i).is_some_and(|a| {
            !a.attisdropped && CStr::from_ptr(a.attname.data.as_ptr()).to_bytes() == b"payload"
        })
    }) else {
        return;
    };
    let natts = (*tupdesc).natts as usize;
    s.values.resize(natts, pg_sys::Datum::from(0));
    s.nulls.resize(natts, true);
    pg_sys::heap_deform_tuple(tuple, tupdesc, s.values.as_mut_ptr(), s.nulls.as_mut_ptr());
    if s.nulls[idx] {
        return;
    }
    let p = pg_sys::pg_detoast_datum_packed(s.values[idx].cast_mut_ptr());
    let bytes = std::slice::from_raw_parts(
        pgrx::varlena::vardata_any(p) as *const u8,
        pgrx::varlena::varsize_any_exhdr(p),
    );
    s.ddl_payloads
        .entry(xid)
        .or_default()
        .push((bytes.to_vec(), subxid));
}

#[pg_guard]
pub unsafe extern "C-unwind" fn truncate(
    ctx: *mut pg_sys::LogicalDecodingContext,
    _txn: *mut pg_sys::ReorderBufferTXN,
    nrelations: i32,
    relations: *mut pg_sys::Relation,
    change: *mut pg_sys::ReorderBufferChange,
) {
    let s = session(ctx);
    let rels = std::slice::from_raw_parts(relations, nrelations.max(0) as usize);
    let mut relids = Vec::with_capacity(rels.len());
    for &rel in rels {
        // Like pgoutput: a partitioned table has no rows of its own; its partitions are listed.
        if (*(*rel).rd_rel).relkind == pg_sys::RELKIND_PARTITIONED_TABLE as std::ffi::c_char {
            continue;
        }
        let entry: *mut RelEntry = s.rels.get(rel, &s.opts);
        if matches!((*entry).role, Role::Data(a) if a.truncate) {
            send_begin(s);
            send_relation(s, &mut *entry);
            relids.push((*rel).rd_id.to_u32());
        }
    }
    if relids.is_empty() {
        return;
    }
    let t = &(*change).data.truncate;
    let stream_xid = s.stream_xid.map(|_| (*(*change).txn).xid.into_inner());
    Writer::new(&mut s.out).truncate(t.cascade, t.restart_seqs, &relids, stream_xid);
    s.maybe_flush(ctx);
}

// ---- messages ----------------------------------------------------------------------------------

#[pg_guard]
pub unsafe extern "C-unwind" fn message(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    lsn: pg_sys::XLogRecPtr,
    transactional: bool,
    prefix: *const std::ffi::c_char,
    size: pg_sys::Size,
    content: *const std::ffi::c_char,
) {
    let s = session(ctx);
    let prefix_raw = CStr::from_ptr(prefix).to_bytes();
    let prefix = match crate::text::to_utf8(prefix_raw, s.db) {
        Ok(p) => p.into_owned(),
        Err(e) => pgrx::error!("figoutput: a logical message prefix: {e}"),
    };
    let prefix = prefix.as_slice();
    let content: &[u8] = if size == 0 {
        &[]
    } else {
        std::slice::from_raw_parts(content as *const u8, size)
    };
    let stream_xid = if transactional {
        s.stream_xid.map(|_| message_owner_xid(txn, lsn))
    } else {
        None
    };
    if !transactional {
        // Outside any transaction: a unit of its own.
        Writer::new(&mut s.out).message(lsn, false, prefix, content, None);
        s.flush(ctx, true);
        return;
    }
    send_begin(s);
    let top_xid = (*txn).xid.into_inner();
    // The DDL log row's subtransaction: inside a stream block the DDL record carries it, so a
    // rolled-back savepoint's DDL is dropped with that savepoint's changes.
    let authenticated_in = if prefix == DDL_MESSAGE_PREFIX.as_bytes() {
        s.ddl_payloads.get_mut(&top_xid).and_then(|v| {
            let i = v.iter().position(|(p, _)| p == content)?;
            Some(v.remove(i).1)
        })
    } else {
        None
    };
    if let Some(subxid) = authenticated_in {
        let payload = match crate::text::to_utf8(content, s.db) {
            Ok(p) => p.into_owned(),
            Err(e) => pgrx::error!("figoutput: DDL payload: {e}"),
        };
        Writer::new(&mut s.out).ddl(lsn, &payload, stream_xid.map(|_| subxid));
    } else {
        Writer::new(&mut s.out).message(lsn, true, prefix, content, stream_xid);
    }
    s.maybe_flush(ctx);
}

// ---- streaming of large in-progress transactions (PostgreSQL 14+) ------------------------------

#[pg_guard]
pub unsafe extern "C-unwind" fn stream_start(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
) {
    let s = session(ctx);
    let xid = (*txn).xid.into_inner();
    let first = s.streamed.insert(xid);
    s.stream_xid = Some(xid);
    // Other transactions' changes interleave with stream blocks: describe relations afresh inside.
    s.rels.mark_all_unsent();
    Writer::new(&mut s.out).stream_start(xid, first);
}

#[pg_guard]
pub unsafe extern "C-unwind" fn stream_stop(
    ctx: *mut pg_sys::LogicalDecodingContext,
    _txn: *mut pg_sys::ReorderBufferTXN,
) {
    let s = session(ctx);
    Writer::new(&mut s.out).stream_stop();
    s.stream_xid = None;
    s.rels.mark_all_unsent();
    s.flush(ctx, true);
}

/// The xid a streamed transactional message carries, so STREAM_ABORT of a rolled-back savepoint
/// cancels it. PostgreSQL hands the message callback the top-level transaction, not the
/// subtransaction that emitted the message, so it is found from the subtransactions still known:
/// the one that began last before the message. That is the message's own subtransaction, or one
/// released into it whose fate is the same (a rolled-back subtransaction is forgotten when its
/// abort is decoded, and a savepoint's rollback aborts those released into it too); with none, the
/// top-level transaction.
unsafe fn message_owner_xid(txn: *mut pg_sys::ReorderBufferTXN, lsn: pg_sys::XLogRecPtr) -> u32 {
    let mut owner = (*txn).xid.into_inner();
    let head = std::ptr::addr_of_mut!((*txn).subtxns.head);
    let mut node = (*head).next;
    if node.is_null() {
        return owner; // never initialized: no subtransaction
    }
    let offset = std::mem::offset_of!(pg_sys::ReorderBufferTXN, node);
    let mut latest: pg_sys::XLogRecPtr = 0;
    while node != head {
        let sub = node
            .cast::<u8>()
            .sub(offset)
            .cast::<pg_sys::ReorderBufferTXN>();
        // `lsn` is the end of the message's record; a subtransaction that begins with the message
        // begins before that, one that begins after it begins at or past it.
        let first = (*sub).first_lsn;
        if first < lsn && first >= latest {
            latest = first;
            owner = (*sub).xid.into_inner();
        }
        node = (*node).next;
    }
    owner
}

unsafe fn toplevel_xid(txn: *mut pg_sys::ReorderBufferTXN) -> u32 {
    let top = (*txn).toptxn;
    if top.is_null() {
        (*txn).xid.into_inner()
    } else {
        (*top).xid.into_inner()
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn stream_abort(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    _abort_lsn: pg_sys::XLogRecPtr,
) {
    let s = session(ctx);
    let top = toplevel_xid(txn);
    let xid = (*txn).xid.into_inner();
    if top == xid {
        s.streamed.remove(&top);
        s.ddl_payloads.remove(&top);
    }
    Writer::new(&mut s.out).stream_abort(top, xid);
    s.flush(ctx, true);
}

#[pg_guard]
pub unsafe extern "C-unwind" fn stream_commit(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    commit_lsn: pg_sys::XLogRecPtr,
) {
    let s = session(ctx);
    let xid = (*txn).xid.into_inner();
    s.streamed.remove(&xid);
    s.ddl_payloads.remove(&xid);
    Writer::new(&mut s.out).stream_commit(xid, commit_lsn, (*txn).end_lsn, commit_time(txn));
    s.flush(ctx, true);
}
