//! The output plugin callbacks: one function per callback, each guarded by `#[pg_guard]` so that a
//! Rust panic or a PostgreSQL ERROR inside becomes an ERROR for this walsender (or SQL call), never a
//! crash of the server. Work per change runs in a memory context that is reset after the change.
//!
//! Pointers: PostgreSQL passes every callback its decoding context, and the transaction, relation,
//! change or message being decoded; each is valid until the callback returns and owned by
//! PostgreSQL (the reorder buffer, the relcache, the WAL reader). Nothing here keeps one past the
//! callback, except the session, which the decoding context owns through `output_plugin_private`.
//!
//! ```text
//! begin ─▶ (first emitted change: BEGIN [ORIGIN]) ─▶ RELATION? ─▶ INSERT/UPDATE/DELETE/TRUNCATE ─▶ commit: COMMIT
//! stream_start ─▶ STREAM_START ─▶ changes (+ subxact xid) ─▶ stream_stop: STREAM_STOP
//! stream_commit: STREAM_COMMIT          stream_abort: STREAM_ABORT
//! ```

use crate::options::Options;
use crate::relation::{RelEntry, Role};
use crate::session::{PendingBegin, Row, Session};
use crate::text::DbEncoding;
use crate::values::is_unchanged_toast;
use fig_format::encode::Writer;
use fig_format::{OldKind, ReplicaIdentity, DDL_MESSAGE_PREFIX};
use pgrx::pg_guard;
use pgrx::pg_sys;
use std::ffi::CStr;

/// Skipped changes between two progress reports, so the walsender keeps answering keepalives while
/// it filters out a write-heavy table (what pgoutput does too).
const PROGRESS_EVERY: u64 = 100;

/// The session of a running callback.
///
/// # Safety
/// `ctx` must be the decoding context PostgreSQL passed to the running callback, and the borrow
/// must not outlive the callback nor overlap another borrow of the session.
unsafe fn session<'a>(ctx: *mut pg_sys::LogicalDecodingContext) -> &'a mut Session {
    // SAFETY: `ctx` is valid for the callback (the caller's contract). output_plugin_private is
    // ours alone: NULL, or the Box<Session> that install_session leaked into it, freed only by
    // drop_session, which never runs during another callback of the same context. The caller
    // holds no other borrow of it.
    let p = unsafe { (*ctx).output_plugin_private as *mut Session };
    // SAFETY: as just said, NULL or a live, exclusively borrowed Session.
    match unsafe { p.as_mut() } {
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
    // SAFETY: `ctx` is the decoding context being set up; output_plugin_options is NIL or the
    // List of DefElem nodes the client sent, allocated in the decoding context and not changed
    // while this callback runs.
    let elems = unsafe { pgrx::PgList::<pg_sys::DefElem>::from_pg((*ctx).output_plugin_options) };
    for elem in elems.iter_ptr() {
        // SAFETY: `elem` is a DefElem of that list. Its defname is a NUL-terminated string; its
        // arg is NULL (an option given without a value) or a value node, which defGetString
        // renders as a NUL-terminated string palloc'd in the current context (or raises an
        // ERROR). Both are copied into Rust strings at once.
        let (name, value) = unsafe {
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
            (name, value)
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
    // SAFETY: `options` is the struct PostgreSQL passes for the plugin to fill, and `ctx` the
    // decoding context; both valid for this callback.
    unsafe {
        (*options).output_type = pg_sys::OutputPluginOutputType::OUTPUT_PLUGIN_BINARY_OUTPUT;
        (*options).receive_rewrites = false;
        #[cfg(not(feature = "pg13"))]
        {
            (*ctx).streaming &= opts.streaming;
        }
    }
    crate::relation::register_invalidation_callbacks();
    // SAFETY: `ctx` is the decoding context in its startup callback; no session exists yet.
    unsafe { install_session(ctx, opts) };
}

/// Stores the session in `output_plugin_private` and arranges for it to be dropped with the decoding
/// context, so an ERROR that skips the shutdown callback (SQL decoding functions) leaks nothing.
///
/// # Safety
/// `ctx` must be a decoding context in its startup callback.
unsafe fn install_session(ctx: *mut pg_sys::LogicalDecodingContext, opts: Options) {
    // SAFETY: `ctx` is valid (the caller's contract). Its memory context holds the decoding
    // context itself and lives until FreeDecodingContext deletes it.
    let mcxt = unsafe { (*ctx).context };
    // SAFETY: `mcxt` outlives the session: the reset callback registered below drops the session
    // when `mcxt` is reset or deleted, before its memory goes.
    let session = Box::into_raw(Box::new(unsafe { Session::new(opts, mcxt) }));
    // SAFETY: `ctx` is valid and output_plugin_private is the plugin's to set. The callback record
    // is allocated (zeroed) in `mcxt` itself, so it lives exactly as long as the context that runs
    // it. Its argument is `ctx`, which is allocated in `mcxt` too and so is still valid when the
    // reset callbacks run (they run before the context's memory is freed).
    unsafe {
        (*ctx).output_plugin_private = session as *mut std::ffi::c_void;
        let cb = pg_sys::MemoryContextAllocZero(
            mcxt,
            std::mem::size_of::<pg_sys::MemoryContextCallback>(),
        ) as *mut pg_sys::MemoryContextCallback;
        (*cb).func = Some(drop_session);
        (*cb).arg = ctx as *mut std::ffi::c_void;
        pg_sys::MemoryContextRegisterResetCallback(mcxt, cb);
    }
}

/// Drops the session, once: from the shutdown callback, or when the decoding context's memory
/// goes (whichever comes first; the other then finds nothing).
///
/// # Safety
/// `arg` must be a live decoding context whose output_plugin_private is NULL or the session that
/// install_session stored, with no borrow of that session alive.
#[pg_guard]
unsafe extern "C-unwind" fn drop_session(arg: *mut std::ffi::c_void) {
    let ctx = arg as *mut pg_sys::LogicalDecodingContext;
    // SAFETY: `ctx` is live (the contract: the shutdown callback's context, or the reset callback
    // running before the memory holding `ctx` is freed). A non-null output_plugin_private is the
    // pointer Box::into_raw gave; clearing it first makes the second call a no-op, so the Box is
    // freed exactly once.
    unsafe {
        let p = (*ctx).output_plugin_private as *mut Session;
        if !p.is_null() {
            (*ctx).output_plugin_private = std::ptr::null_mut();
            drop(Box::from_raw(p));
        }
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn shutdown(ctx: *mut pg_sys::LogicalDecodingContext) {
    // SAFETY: the shutdown callback's `ctx` is live; no callback, hence no session borrow, runs.
    unsafe { drop_session(ctx as *mut std::ffi::c_void) };
}

#[pg_guard]
pub unsafe extern "C-unwind" fn filter_by_origin(
    ctx: *mut pg_sys::LogicalDecodingContext,
    origin_id: pg_sys::RepOriginId,
) -> bool {
    // SAFETY: a callback's own context.
    unsafe { session(ctx) }.opts.only_local_origin && origin_id != 0
}

// ---- transactions ------------------------------------------------------------------------------

/// # Safety
/// `txn` must be a valid ReorderBufferTXN.
#[cfg(any(feature = "pg13", feature = "pg14"))]
unsafe fn commit_time(txn: *mut pg_sys::ReorderBufferTXN) -> i64 {
    // SAFETY: the caller's contract.
    unsafe { (*txn).commit_time }
}
/// # Safety
/// `txn` must be a valid ReorderBufferTXN.
#[cfg(not(any(feature = "pg13", feature = "pg14")))]
unsafe fn commit_time(txn: *mut pg_sys::ReorderBufferTXN) -> i64 {
    // SAFETY: the caller's contract; xact_time is a union whose commit_time member is the one
    // set for a transaction whose commit is being decoded (prepare_time is for two-phase
    // decoding, which figoutput does not enable); both are a TimestampTz anyway.
    unsafe { (*txn).xact_time.commit_time }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn begin(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
) {
    // SAFETY: a callback's own context.
    let s = unsafe { session(ctx) };
    // SAFETY: `txn` is the transaction being decoded, valid for the callback.
    let pending = unsafe {
        PendingBegin {
            xid: (*txn).xid.into_inner(),
            final_lsn: (*txn).final_lsn,
            commit_time: commit_time(txn),
            origin_id: (*txn).origin_id,
            origin_lsn: (*txn).origin_lsn,
        }
    };
    s.pending_begin = Some(pending);
    s.begin_sent = false;
    if !s.opts.skip_empty_xacts {
        // SAFETY: inside a decoding callback.
        unsafe { send_begin(s) };
    }
}

/// Writes the held-back BEGIN (and ORIGIN) once the transaction has something to say.
///
/// # Safety
/// Inside a decoding callback (it may look up the replication origin's name in the catalog).
unsafe fn send_begin(s: &mut Session) {
    let Some(b) = s.pending_begin.take() else {
        return;
    };
    let mut w = Writer::new(&mut s.out);
    w.begin(b.xid, b.final_lsn, b.commit_time);
    if s.opts.include_origin && b.origin_id != 0 {
        let mut name: *mut std::ffi::c_char = std::ptr::null_mut();
        // SAFETY: a catalog lookup inside the decoding transaction (the caller's contract);
        // `name` is a live out-parameter, set (when found) to a NUL-terminated string palloc'd
        // in the current context, copied at once.
        unsafe {
            if pg_sys::replorigin_by_oid(b.origin_id, true, &mut name) && !name.is_null() {
                w.origin(b.origin_lsn, &CStr::from_ptr(name).to_string_lossy());
            }
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
    // SAFETY: a callback's own context.
    let s = unsafe { session(ctx) };
    // SAFETY: `txn` is the transaction being committed, valid for the callback.
    let (xid, end_lsn, commit_time) =
        unsafe { ((*txn).xid.into_inner(), (*txn).end_lsn, commit_time(txn)) };
    s.ddl_payloads.remove(&xid);
    if !s.begin_sent {
        // Nothing was emitted: say so, so the slot can advance past a filtered transaction.
        s.pending_begin = None;
        // SAFETY: the callback's own context.
        unsafe { update_progress(ctx, true) };
        return;
    }
    Writer::new(&mut s.out).commit(commit_lsn, end_lsn, commit_time);
    s.begin_sent = false;
    // SAFETY: inside an output plugin callback, with its context.
    unsafe { s.flush(ctx, true) };
}

/// # Safety
/// `ctx` must be the context of a running output plugin callback.
#[cfg(any(feature = "pg13", feature = "pg14"))]
unsafe fn update_progress(ctx: *mut pg_sys::LogicalDecodingContext, _skipped_xact: bool) {
    // SAFETY: the caller's contract.
    unsafe { pg_sys::OutputPluginUpdateProgress(ctx) };
}
/// # Safety
/// `ctx` must be the context of a running output plugin callback.
#[cfg(not(any(feature = "pg13", feature = "pg14")))]
unsafe fn update_progress(ctx: *mut pg_sys::LogicalDecodingContext, skipped_xact: bool) {
    // SAFETY: the caller's contract.
    unsafe { pg_sys::OutputPluginUpdateProgress(ctx, skipped_xact) };
}

// ---- changes -----------------------------------------------------------------------------------

/// The heap tuple of a change's tuple buffer (NULL for none).
///
/// # Safety
/// `t` must be NULL or a valid tuple buffer, which the result borrows.
#[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16"))]
unsafe fn heap_tuple(t: *mut pg_sys::ReorderBufferTupleBuf) -> pg_sys::HeapTuple {
    if t.is_null() {
        std::ptr::null_mut()
    } else {
        // SAFETY: non-null, so a valid tuple buffer (the caller's contract); this only computes
        // the address of its embedded HeapTupleData.
        unsafe { std::ptr::addr_of_mut!((*t).tuple) }
    }
}
/// The heap tuple of a change (PostgreSQL 17 passes it directly).
///
/// # Safety
/// None: it returns its argument.
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
    // SAFETY: a callback's own context.
    let s = unsafe { session(ctx) };
    #[cfg(feature = "failpoints")]
    fail_after_changes(s);
    use pg_sys::ReorderBufferChangeType as T;
    // SAFETY: `change` is the change being decoded and `txn` its top-level transaction, valid
    // for the callback; change->txn is the (sub)transaction that made it. The change callback
    // is called for INSERT, UPDATE and DELETE only, whose data is the union's `tp` member; its
    // tuple buffers are NULL or valid for the callback.
    let (action, new, old, top_xid, own_xid) = unsafe {
        let c = &*change;
        let tp = &c.data.tp;
        (
            c.action,
            heap_tuple(tp.newtuple),
            heap_tuple(tp.oldtuple),
            (*txn).xid.into_inner(),
            (*c.txn).xid.into_inner(),
        )
    };
    // SAFETY: `rel` is the open relation the change belongs to, inside the decoding transaction.
    let role = unsafe { s.rels.get(rel, &s.opts) }.role;
    let wanted = match role {
        Role::DdlLog => {
            if action == T::REORDER_BUFFER_CHANGE_INSERT && !new.is_null() {
                // SAFETY: `new` is the inserted tuple of `rel`, both valid for the callback.
                unsafe { remember_ddl_payload(s, rel, top_xid, own_xid, new) };
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
            // SAFETY: the callback's own context.
            unsafe { update_progress(ctx, false) };
        }
        return;
    }
    // SAFETY: `rel` is open for the callback, and its tuple descriptor with it.
    let (relid, tupdesc) = unsafe { ((*rel).rd_id.to_u32(), (*rel).rd_att) };
    // For error messages only.
    let relname = || {
        // SAFETY: as above; rd_rel is the open relation's pg_class row.
        let name = unsafe { crate::relation::name_bytes(&(*(*rel).rd_rel).relname) };
        String::from_utf8_lossy(name).into_owned()
    };
    if new.is_null() && action != T::REORDER_BUFFER_CHANGE_DELETE {
        pgrx::error!(
            "figoutput: a change of table \"{}\" carries no new row; the WAL record lacks it",
            relname()
        );
    }

    // SAFETY: change_cxt is the session's own context, alive as long as the session. The
    // previous context is switched back below; an ERROR in between ends the callback, and
    // PostgreSQL's error recovery resets the current context.
    let old_cxt = unsafe { pg_sys::MemoryContextSwitchTo(s.change_cxt) };
    let stream_xid = s.stream_xid.map(|_| own_xid);
    // SAFETY: inside a decoding callback.
    unsafe { send_begin(s) };
    // SAFETY: as above; the entry exists already, so this is a lookup.
    let entry = unsafe { s.rels.get(rel, &s.opts) };
    send_relation(&mut s.out, entry);
    let (out, row, db) = (&mut s.out, &mut s.row, s.db);
    let streamed = stream_xid.is_some();
    // SAFETY: `new` (non-null, checked above, except for DELETE, which does not read it) and
    // `old` (NULL where the WAL carries none) are tuples of `rel`, which `tupdesc` describes; all
    // valid for the callback.
    let result = unsafe {
        match action {
            T::REORDER_BUFFER_CHANGE_INSERT => {
                Writer::new(out).insert_header(relid, streamed);
                write_tuple(row, out, db, entry, tupdesc, new, false)
            }
            T::REORDER_BUFFER_CHANGE_UPDATE => {
                Writer::new(out).update_header(relid, streamed);
                write_old(row, out, db, entry, tupdesc, old)
                    .and_then(|_| write_tuple(row, out, db, entry, tupdesc, new, false))
            }
            _ => {
                Writer::new(out).delete_header(relid, streamed);
                write_old(row, out, db, entry, tupdesc, old)
            }
        }
    };
    if let Err(e) = result {
        pgrx::ereport!(
            ERROR,
            pgrx::PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!(
                "figoutput: cannot encode a row of table \"{}\": {e}",
                relname()
            )
        );
    }
    Writer::new(&mut s.out).stream_xid(stream_xid);
    // SAFETY: `old_cxt` was current when the callback began and outlives it. Nothing made in
    // change_cxt is referenced after the reset: the records were copied into `s.out`.
    unsafe {
        pg_sys::MemoryContextSwitchTo(old_cxt);
        pg_sys::MemoryContextReset(s.change_cxt);
    }
    // SAFETY: inside an output plugin callback, with its context.
    unsafe { s.maybe_flush(ctx) };
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

fn send_relation(out: &mut Vec<u8>, entry: &mut RelEntry) {
    if !entry.sent {
        out.extend_from_slice(&entry.relation_record);
        entry.sent = true;
    }
}

/// Writes the old row of an UPDATE or DELETE (or says there is none).
///
/// # Safety
/// As [`write_tuple`], with `old` NULL allowed.
unsafe fn write_old(
    row: &mut Row,
    out: &mut Vec<u8>,
    db: DbEncoding,
    entry: &mut RelEntry,
    tupdesc: pg_sys::TupleDesc,
    old: pg_sys::HeapTuple,
) -> Result<(), crate::values::ValueError> {
    if old.is_null() {
        Writer::new(out).no_old();
        return Ok(());
    }
    let (kind, key_only) = if entry.identity == ReplicaIdentity::Full {
        (OldKind::Full, false)
    } else {
        (OldKind::Key, true)
    };
    Writer::new(out).old_header(kind);
    // SAFETY: the caller's contract, and `old` is non-null.
    unsafe { write_tuple(row, out, db, entry, tupdesc, old, key_only) }
}

/// Writes one tuple: a value per emitted column, in RELATION order. With `key_only`, columns outside
/// the replica identity are written as nil (the WAL's old key tuple does not carry them).
///
/// # Safety
/// `tuple` must be a valid, non-null tuple of the open relation `entry` was built for, described
/// by `tupdesc`, inside a decoding callback; values are encoded into the current memory context.
unsafe fn write_tuple(
    row: &mut Row,
    out: &mut Vec<u8>,
    db: DbEncoding,
    entry: &mut RelEntry,
    tupdesc: pg_sys::TupleDesc,
    tuple: pg_sys::HeapTuple,
    key_only: bool,
) -> Result<(), crate::values::ValueError> {
    // SAFETY: the caller's contract; the datums point into `tuple`, valid for the callback.
    let (values, nulls) = unsafe { row.deform(tuple, tupdesc) };
    // SAFETY: `tupdesc` is the open relation's descriptor, valid for the callback.
    let desc = unsafe { pgrx::PgTupleDesc::from_pg_unchecked(tupdesc) };
    let mut w = Writer::new(out);
    w.tuple_header(entry.columns.len() as u32);
    for col in entry.columns.iter_mut() {
        let i = col.att_index;
        if nulls[i] || (key_only && !col.key) {
            w.nil();
            continue;
        }
        // The encoder reads the datum as the type the entry was built for: make sure it is.
        if desc
            .get(i)
            .is_none_or(|a| a.attisdropped || a.atttypid != col.type_oid)
        {
            pgrx::error!(
                "figoutput: the relation cache is out of date for attribute {} (a bug in figoutput)",
                i + 1
            );
        }
        // SAFETY: a non-null varlena datum (is_varlena), just deformed from `tuple`.
        if col.is_varlena && unsafe { is_unchanged_toast(values[i]) } {
            w.unchanged_toast();
        } else {
            // SAFETY: a non-null datum of attribute `i`, whose type (checked just above) is the
            // one `col.enc` was made for; inside a decoding callback.
            unsafe { col.enc.encode(&mut w, values[i], db)? };
        }
    }
    Ok(())
}

/// Keeps the payload of a row the extension's DDL trigger wrote, to authenticate its message.
///
/// # Safety
/// `rel` must be the open figoutput.ddl_log and `tuple` a valid row of it, inside a decoding
/// callback.
unsafe fn remember_ddl_payload(
    s: &mut Session,
    rel: pg_sys::Relation,
    xid: u32,
    subxid: u32,
    tuple: pg_sys::HeapTuple,
) {
    // SAFETY: `rel` is open (the caller's contract); its descriptor is valid for the callback.
    let (tupdesc, desc) = unsafe {
        let tupdesc = (*rel).rd_att;
        (tupdesc, pgrx::PgTupleDesc::from_pg_unchecked(tupdesc))
    };
    // The payload column, as the extension script makes it: text. Anything else (the owner
    // altered the table) authenticates nothing.
    let Some(idx) = (0..desc.len()).find(|&i| {
        desc.get(i).is_some_and(|a| {
            !a.attisdropped
                && a.atttypid == pg_sys::TEXTOID
                && crate::relation::name_bytes(&a.attname) == b"payload"
        })
    }) else {
        return;
    };
    // SAFETY: `tuple` is a row of `rel`, which `tupdesc` describes (the caller's contract).
    let (values, nulls) = unsafe { s.row.deform(tuple, tupdesc) };
    if nulls[idx] {
        return;
    }
    // SAFETY: a non-null text datum (checked above), i.e. a varlena, in `tuple` or detoasted by
    // pg_detoast_datum_packed into the current context; its header gives the length of the
    // bytes that follow, copied out at once.
    let bytes = unsafe {
        let p = pg_sys::pg_detoast_datum_packed(values[idx].cast_mut_ptr());
        std::slice::from_raw_parts(
            pgrx::varlena::vardata_any(p) as *const u8,
            pgrx::varlena::varsize_any_exhdr(p),
        )
        .to_vec()
    };
    s.ddl_payloads.entry(xid).or_default().push((bytes, subxid));
}

#[pg_guard]
pub unsafe extern "C-unwind" fn truncate(
    ctx: *mut pg_sys::LogicalDecodingContext,
    _txn: *mut pg_sys::ReorderBufferTXN,
    nrelations: i32,
    relations: *mut pg_sys::Relation,
    change: *mut pg_sys::ReorderBufferChange,
) {
    // SAFETY: a callback's own context.
    let s = unsafe { session(ctx) };
    // SAFETY: PostgreSQL passes an array of `nrelations` open relations, valid for the callback.
    let rels = unsafe { std::slice::from_raw_parts(relations, nrelations.max(0) as usize) };
    let mut relids = Vec::with_capacity(rels.len());
    for &rel in rels {
        // SAFETY: an open relation of that array; its pg_class row is valid while it is open.
        let (relkind, relid) = unsafe { ((*(*rel).rd_rel).relkind, (*rel).rd_id) };
        // Like pgoutput: a partitioned table has no rows of its own; its partitions are listed.
        if relkind == pg_sys::RELKIND_PARTITIONED_TABLE as std::ffi::c_char {
            continue;
        }
        // SAFETY: an open relation, inside the decoding transaction.
        let role = unsafe { s.rels.get(rel, &s.opts) }.role;
        if matches!(role, Role::Data(a) if a.truncate) {
            // SAFETY: inside a decoding callback.
            unsafe { send_begin(s) };
            // SAFETY: as above; the entry exists already, so this is a lookup.
            send_relation(&mut s.out, unsafe { s.rels.get(rel, &s.opts) });
            relids.push(relid.to_u32());
        }
    }
    if relids.is_empty() {
        return;
    }
    // SAFETY: `change` is the TRUNCATE change being decoded, valid for the callback; for this
    // action the union's `truncate` member is the one in use; change->txn is the (sub)transaction
    // that made it.
    let (cascade, restart_seqs, own_xid) = unsafe {
        let c = &*change;
        (
            c.data.truncate.cascade,
            c.data.truncate.restart_seqs,
            (*c.txn).xid.into_inner(),
        )
    };
    let stream_xid = s.stream_xid.map(|_| own_xid);
    Writer::new(&mut s.out).truncate(cascade, restart_seqs, &relids, stream_xid);
    // SAFETY: inside an output plugin callback, with its context.
    unsafe { s.maybe_flush(ctx) };
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
    // SAFETY: a callback's own context.
    let s = unsafe { session(ctx) };
    // SAFETY: the message's prefix is a NUL-terminated string in the decoded WAL record, valid
    // for the callback.
    let prefix_raw = unsafe { CStr::from_ptr(prefix) }.to_bytes();
    let prefix = match crate::text::to_utf8(prefix_raw, s.db) {
        Ok(p) => p.into_owned(),
        Err(e) => pgrx::error!("figoutput: a logical message prefix: {e}"),
    };
    let prefix = prefix.as_slice();
    let content: &[u8] = if size == 0 {
        &[]
    } else {
        // SAFETY: the message's content: `size` bytes in the decoded WAL record, valid for the
        // callback.
        unsafe { std::slice::from_raw_parts(content as *const u8, size) }
    };
    if !transactional {
        // Outside any transaction (`txn` may be NULL): a unit of its own.
        Writer::new(&mut s.out).message(lsn, false, prefix, content, None);
        // SAFETY: inside an output plugin callback, with its context.
        unsafe { s.flush(ctx, true) };
        return;
    }
    // SAFETY: a transactional message comes with its top-level transaction, valid for the
    // callback.
    let stream_xid = s.stream_xid.map(|_| unsafe { message_owner_xid(txn, lsn) });
    // SAFETY: inside a decoding callback.
    unsafe { send_begin(s) };
    // SAFETY: as above.
    let top_xid = unsafe { (*txn).xid.into_inner() };
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
    // SAFETY: inside an output plugin callback, with its context.
    unsafe { s.maybe_flush(ctx) };
}

// ---- streaming of large in-progress transactions (PostgreSQL 14+) ------------------------------

#[pg_guard]
pub unsafe extern "C-unwind" fn stream_start(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
) {
    // SAFETY: a callback's own context.
    let s = unsafe { session(ctx) };
    // SAFETY: `txn` is the transaction being streamed, valid for the callback.
    let xid = unsafe { (*txn).xid.into_inner() };
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
    // SAFETY: a callback's own context.
    let s = unsafe { session(ctx) };
    Writer::new(&mut s.out).stream_stop();
    s.stream_xid = None;
    s.rels.mark_all_unsent();
    // SAFETY: inside an output plugin callback, with its context.
    unsafe { s.flush(ctx, true) };
}

/// The xid a streamed transactional message carries, so STREAM_ABORT of a rolled-back savepoint
/// cancels it. PostgreSQL hands the message callback the top-level transaction, not the
/// subtransaction that emitted the message, so it is found from the subtransactions still known:
/// the one that began last before the message. That is the message's own subtransaction, or one
/// released into it whose fate is the same (a rolled-back subtransaction is forgotten when its
/// abort is decoded, and a savepoint's rollback aborts those released into it too); with none, the
/// top-level transaction.
///
/// # Safety
/// `txn` must be the valid top-level transaction of a running callback.
unsafe fn message_owner_xid(txn: *mut pg_sys::ReorderBufferTXN, lsn: pg_sys::XLogRecPtr) -> u32 {
    // SAFETY: `txn` is valid (the caller's contract). Its `subtxns` is a dlist_head embedded in
    // it: either never initialized (next NULL: no subtransaction) or a circular list through the
    // `node` field of the ReorderBufferTXN of each known subtransaction. The reorder buffer owns
    // them and changes the list only between callbacks, so every node reached from the head is
    // the `node` of a live ReorderBufferTXN until the walk returns to the head.
    unsafe {
        let mut owner = (*txn).xid.into_inner();
        let head = std::ptr::addr_of_mut!((*txn).subtxns.head);
        let mut node = (*head).next;
        if node.is_null() {
            return owner;
        }
        let offset = std::mem::offset_of!(pg_sys::ReorderBufferTXN, node);
        let mut latest: pg_sys::XLogRecPtr = 0;
        while node != head {
            // dlist_container: the ReorderBufferTXN whose `node` this is.
            let sub = node
                .cast::<u8>()
                .sub(offset)
                .cast::<pg_sys::ReorderBufferTXN>();
            // `lsn` is the end of the message's record; a subtransaction that begins with the
            // message begins before that, one that begins after it begins at or past it.
            let first = (*sub).first_lsn;
            if first < lsn && first >= latest {
                latest = first;
                owner = (*sub).xid.into_inner();
            }
            node = (*node).next;
        }
        owner
    }
}

/// # Safety
/// `txn` must be a valid ReorderBufferTXN (its `toptxn` NULL or valid too).
unsafe fn toplevel_xid(txn: *mut pg_sys::ReorderBufferTXN) -> u32 {
    // SAFETY: the caller's contract.
    unsafe {
        let top = (*txn).toptxn;
        if top.is_null() {
            (*txn).xid.into_inner()
        } else {
            (*top).xid.into_inner()
        }
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn stream_abort(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    _abort_lsn: pg_sys::XLogRecPtr,
) {
    // SAFETY: a callback's own context.
    let s = unsafe { session(ctx) };
    // SAFETY: `txn` is the (sub)transaction being aborted, valid for the callback, and its
    // top-level transaction with it.
    let (top, xid) = unsafe { (toplevel_xid(txn), (*txn).xid.into_inner()) };
    if top == xid {
        s.streamed.remove(&top);
        s.ddl_payloads.remove(&top);
    }
    Writer::new(&mut s.out).stream_abort(top, xid);
    // SAFETY: inside an output plugin callback, with its context.
    unsafe { s.flush(ctx, true) };
}

#[pg_guard]
pub unsafe extern "C-unwind" fn stream_commit(
    ctx: *mut pg_sys::LogicalDecodingContext,
    txn: *mut pg_sys::ReorderBufferTXN,
    commit_lsn: pg_sys::XLogRecPtr,
) {
    // SAFETY: a callback's own context.
    let s = unsafe { session(ctx) };
    // SAFETY: `txn` is the transaction being committed, valid for the callback.
    let (xid, end_lsn, commit_time) =
        unsafe { ((*txn).xid.into_inner(), (*txn).end_lsn, commit_time(txn)) };
    s.streamed.remove(&xid);
    s.ddl_payloads.remove(&xid);
    Writer::new(&mut s.out).stream_commit(xid, commit_lsn, end_lsn, commit_time);
    // SAFETY: inside an output plugin callback, with its context.
    unsafe { s.flush(ctx, true) };
}
