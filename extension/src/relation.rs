//! The per-session relation cache: for each table seen, whether its changes are emitted (filters,
//! publications, the protected DDL table), how its columns are encoded, and its RELATION record.
//!
//! A RELATION record goes out before a table's first change in a session and again whenever the
//! table's definition changed. Definition changes reach us as relcache invalidations (registered once
//! per process); an invalidated entry is rebuilt on next use and its RELATION re-sent only if the
//! rebuilt record differs, so maintenance that merely touches pg_class does not spam the stream.

use crate::options::Options;
use crate::table_filter::table_selected;
use crate::text::{to_utf8, DbEncoding};
use crate::values::TypeEncoder;
use fig_format::encode::{ColumnOut, Writer};
use fig_format::{ColumnFlags, ReplicaIdentity, DDL_LOG_TABLE, EXTENSION_SCHEMA};
use pgrx::pg_sys;
use pgrx::PgTupleDesc;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;

/// What the plugin does with a table's changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Emitted, for the actions listed.
    Data(Actions),
    /// The extension's protected DDL table: its inserts authenticate DDL messages, never emitted.
    DdlLog,
    /// Filtered out by the include/exclude lists or the publications.
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Actions {
    pub insert: bool,
    pub update: bool,
    pub delete: bool,
    pub truncate: bool,
}

impl Actions {
    const ALL: Actions = Actions {
        insert: true,
        update: true,
        delete: true,
        truncate: true,
    };
}

/// One emitted column: its position in the tuple descriptor and its encoder.
pub struct Column {
    pub att_index: usize,
    /// The attribute's type when the entry was built: checked against the tuple descriptor
    /// before a value is encoded, so a stale entry is an ERROR, never a datum misread.
    pub type_oid: pg_sys::Oid,
    pub is_varlena: bool,
    pub key: bool,
    pub enc: TypeEncoder,
}

pub struct RelEntry {
    pub role: Role,
    pub identity: ReplicaIdentity,
    pub columns: Vec<Column>,
    /// The encoded RELATION record, appended to the output whenever it must be (re)sent.
    pub relation_record: Vec<u8>,
    /// The partitioned tables above it (a partition), nearest first. Not in the record, but a
    /// receiver that files a partition's changes under its root must hear of a change to it
    /// (ATTACH / DETACH PARTITION): the RELATION is sent again when it changes.
    ancestors: Vec<pg_sys::Oid>,
    pub sent: bool,
    stale: bool,
}

thread_local! {
    /// Relcache invalidations received since the cache last looked: (everything, these relations).
    static PENDING: RefCell<(bool, Vec<pg_sys::Oid>)> = const { RefCell::new((false, Vec::new())) };
}
static REGISTERED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_relcache_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        if relid == pg_sys::InvalidOid || p.1.len() >= 1024 {
            p.0 = true;
            p.1.clear();
        } else {
            p.1.push(relid);
        }
    });
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_publication_invalidation(
    _arg: pg_sys::Datum,
    _cache: i32,
    _hash: u32,
) {
    PENDING.with(|p| p.borrow_mut().0 = true);
}

/// Registers the invalidation callbacks once per backend. They cannot be unregistered, so they only
/// touch the thread-local list above, never a session's state.
pub fn register_invalidation_callbacks() {
    if REGISTERED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    // SAFETY: the callbacks are functions of this library, which stays loaded for the life of the
    // backend (PostgreSQL never unloads a library), so the pointers PostgreSQL keeps stay valid;
    // each is `#[pg_guard]`ed and touches only the thread-local PENDING. The arg Datum is unused.
    // The cache ids are valid syscache identifiers of this major version.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(
            Some(on_relcache_invalidation),
            pg_sys::Datum::from(0),
        );
        for cache in [
            pg_sys::SysCacheIdentifier::PUBLICATIONRELMAP,
            pg_sys::SysCacheIdentifier::PUBLICATIONOID,
            #[cfg(not(any(feature = "pg13", feature = "pg14")))]
            pg_sys::SysCacheIdentifier::PUBLICATIONNAMESPACEMAP,
        ] {
            pg_sys::CacheRegisterSyscacheCallback(
                cache as i32,
                Some(on_publication_invalidation),
                pg_sys::Datum::from(0),
            );
        }
    }
}

pub struct RelCache {
    entries: HashMap<pg_sys::Oid, RelEntry>,
    /// Long-lived context for output-function caches.
    mcxt: pg_sys::MemoryContext,
    /// Names leave as UTF-8, like values.
    db: DbEncoding,
}

impl RelCache {
    pub fn new(mcxt: pg_sys::MemoryContext, db: DbEncoding) -> Self {
        RelCache {
            entries: HashMap::new(),
            mcxt,
            db,
        }
    }

    /// Forget which RELATIONs were sent: they will be sent again before the next change. Used at
    /// stream boundaries, where a streamed transaction and others interleave.
    pub fn mark_all_unsent(&mut self) {
        for e in self.entries.values_mut() {
            e.sent = false;
        }
    }

    fn apply_invalidations(&mut self) {
        PENDING.with(|p| {
            let mut p = p.borrow_mut();
            if p.0 {
                for e in self.entries.values_mut() {
                    e.stale = true;
                }
            }
            for relid in p.1.drain(..) {
                if let Some(e) = self.entries.get_mut(&relid) {
                    e.stale = true;
                }
            }
            p.0 = false;
        });
    }

    /// The entry for `rel`, built or rebuilt as needed.
    ///
    /// # Safety
    /// `rel` must be an open relation, inside a decoding callback.
    pub unsafe fn get(&mut self, rel: pg_sys::Relation, opts: &Options) -> &mut RelEntry {
        self.apply_invalidations();
        // SAFETY: `rel` is an open relation (the caller's contract): its RelationData is valid.
        let relid = unsafe { (*rel).rd_id };
        let needs_build = self.entries.get(&relid).is_none_or(|e| e.stale);
        if needs_build {
            // SAFETY: `rel` is open, inside a decoding callback (the caller's contract), and
            // `self.mcxt` is the decoding context's memory context, which outlives this cache.
            let fresh = unsafe { build_entry(rel, opts, self.mcxt, self.db) };
            let sent = self.entries.get(&relid).is_some_and(|old| {
                old.sent
                    && old.relation_record == fresh.relation_record
                    && old.ancestors == fresh.ancestors
            });
            self.entries.insert(relid, RelEntry { sent, ..fresh });
        }
        match self.entries.get_mut(&relid) {
            Some(e) => e,
            None => pgrx::error!("figoutput: relation cache lost relation {relid:?}"),
        }
    }
}

/// The bytes of a catalog name, up to its NUL (or all NAMEDATALEN of them, should there be none).
pub(crate) fn name_bytes(n: &pg_sys::NameData) -> &[u8] {
    // SAFETY: c_char and u8 have the same size and alignment and every bit pattern is valid for
    // both; the slice covers exactly `n.data`, borrowed for as long as `n` is.
    let all = unsafe { std::slice::from_raw_parts(n.data.as_ptr().cast::<u8>(), n.data.len()) };
    all.iter()
        .position(|&b| b == 0)
        .map_or(all, |end| &all[..end])
}

/// A catalog name (in the database encoding) as UTF-8.
fn utf8_name(raw: &[u8], db: DbEncoding, what: &str) -> Vec<u8> {
    match to_utf8(raw, db) {
        Ok(n) => n.into_owned(),
        Err(e) => pgrx::error!("figoutput: the name of a {what}: {e}"),
    }
}

/// # Safety
/// `rel` must be an open relation, inside a decoding callback (a transaction with a historic
/// snapshot, so catalog lookups see the catalog as of the change); `mcxt` a valid memory context
/// that outlives the entry.
unsafe fn build_entry(
    rel: pg_sys::Relation,
    opts: &Options,
    mcxt: pg_sys::MemoryContext,
    db: DbEncoding,
) -> RelEntry {
    // SAFETY: `rel` is open (the caller's contract): its RelationData and the pg_class row it
    // points at (rd_rel) stay valid and unchanged while it is open, which is longer than this
    // call; the relcache changes an open relation's entry only at invalidation processing, which
    // does not happen while this function runs.
    let (form, relid) = unsafe { (&*(*rel).rd_rel, (*rel).rd_id) };
    // SAFETY: a syscache lookup inside the decoding transaction; the result is NULL (no such
    // namespace) or a NUL-terminated copy palloc'd in the current context, read here only.
    let schema_ptr = unsafe { pg_sys::get_namespace_name(form.relnamespace) };
    let schema_raw = if schema_ptr.is_null() {
        &b""[..]
    } else {
        // SAFETY: non-null, so the palloc'd C string just described.
        unsafe { CStr::from_ptr(schema_ptr) }.to_bytes()
    };
    let schema = utf8_name(schema_raw, db, "schema");
    let table = utf8_name(name_bytes(&form.relname), db, "table");
    let schema_s = String::from_utf8_lossy(&schema);
    let table_s = String::from_utf8_lossy(&table);

    let identity =
        ReplicaIdentity::from_u8(form.relreplident as u8).unwrap_or(ReplicaIdentity::Default);
    let named_ddl_log = schema == EXTENSION_SCHEMA.as_bytes() && table == DDL_LOG_TABLE.as_bytes();
    let role = if named_ddl_log
        // SAFETY: a catalog lookup inside the decoding transaction (this function's contract).
        && unsafe { owned_by_extension(pg_sys::RelationRelationId, relid) }
    {
        // SAFETY: `rel` is open, inside the decoding transaction (this function's contract).
        if unsafe { ddl_log_guarded(rel) } {
            Role::DdlLog
        } else {
            // Never emitted either way; unguarded, its rows authenticate nothing.
            pgrx::log!("figoutput: figoutput.ddl_log lacks its guard trigger ddl_log_guard (missing, disabled, not firing ALWAYS, or with a WHEN condition), so no DDL message is trusted: DDL arrives as plain MESSAGE records. Recreate the extension (DROP EXTENSION figoutput; CREATE EXTENSION figoutput) to restore DDL records.");
            Role::Skip
        }
    } else if !table_selected(
        &opts.include_tables,
        &opts.exclude_tables,
        &schema_s,
        &table_s,
    ) {
        Role::Skip
    } else if opts.publications.is_empty() {
        Role::Data(Actions::ALL)
    } else {
        // SAFETY: `rel` is open, inside the decoding transaction (this function's contract).
        match unsafe { publication_actions(rel, &opts.publications) } {
            Some(a) => Role::Data(a),
            None => Role::Skip,
        }
    };

    let key_attrs = if identity == ReplicaIdentity::Full {
        std::ptr::null_mut()
    } else {
        // SAFETY: `rel` is open; the bitmap returned (NULL when there is no identity key) is a
        // copy palloc'd in the current context, read below within this call only.
        unsafe { pg_sys::RelationGetIdentityKeyBitmap(rel) }
    };
    // SAFETY: rd_att is the open relation's tuple descriptor, valid while it is open; the
    // unchecked wrapper takes no reference count, which is fine for a borrow within this call.
    let tupdesc = unsafe { PgTupleDesc::from_pg_unchecked((*rel).rd_att) };
    let mut columns = Vec::new();
    // (column as encoded, its UTF-8 name, its UTF-8 type name)
    let mut outs: Vec<(ColumnOut<'static>, Vec<u8>, Vec<u8>)> = Vec::new();
    if matches!(role, Role::Data(_)) {
        for i in 0..tupdesc.len() {
            let Some(att) = tupdesc.get(i) else { continue };
            // Only stored generated columns have a value in the tuple (PostgreSQL 18's virtual
            // ones are computed on read), and they are sent only on request, as pgoutput does.
            let stored_generated =
                att.attgenerated == pg_sys::ATTRIBUTE_GENERATED_STORED as std::ffi::c_char;
            if att.attisdropped
                || (att.attgenerated != 0 && !(stored_generated && opts.include_generated))
            {
                continue;
            }
            let key = match identity {
                ReplicaIdentity::Full => true,
                ReplicaIdentity::Nothing => false,
                // SAFETY: `key_attrs` is the bitmap read above (NULL reads as empty), alive for
                // this call.
                _ => unsafe {
                    pg_sys::bms_is_member(
                        att.attnum as i32 - pg_sys::FirstLowInvalidHeapAttributeNumber,
                        key_attrs,
                    )
                },
            };
            // SAFETY: inside the decoding transaction, with `mcxt` outliving the entry (this
            // function's contract).
            let enc = unsafe { TypeEncoder::for_type(att.atttypid, mcxt) };
            // SAFETY: format_type_with_typemod returns a NUL-terminated string palloc'd in the
            // current context (an unknown type is an ERROR), read before this call returns.
            let type_text = unsafe {
                CStr::from_ptr(pg_sys::format_type_with_typemod(
                    att.atttypid,
                    att.atttypmod,
                ))
            };
            let type_name = utf8_name(type_text.to_bytes(), db, "type");
            let mut flags = 0u8;
            if att.attnotnull {
                flags |= ColumnFlags::NOT_NULL;
            }
            if key {
                flags |= ColumnFlags::KEY;
            }
            if att.attgenerated != 0 {
                flags |= ColumnFlags::GENERATED;
            }
            outs.push((
                ColumnOut {
                    attnum: att.attnum,
                    name: b"",
                    type_oid: att.atttypid.to_u32(),
                    typmod: att.atttypmod,
                    type_name: b"",
                    flags,
                    kind: enc.kind,
                    elem_kind: enc.elem_kind(),
                },
                utf8_name(name_bytes(&att.attname), db, "column"),
                type_name,
            ));
            columns.push(Column {
                att_index: i,
                type_oid: att.atttypid,
                is_varlena: att.attlen == -1,
                key,
                enc,
            });
        }
    }
    let mut relation_record = Vec::new();
    let mut w = Writer::new(&mut relation_record);
    w.relation_header(relid.to_u32(), &schema, &table, identity, outs.len() as u32);
    for (col, name, type_name) in &outs {
        w.column(&ColumnOut {
            name,
            type_name,
            ..*col
        });
    }
    let ancestors = if form.relispartition {
        // SAFETY: catalog lookups inside the decoding transaction (this function's contract),
        // under its historic snapshot, so the ancestors are those at the change; the list comes
        // back palloc'd in the current context and is copied out at once.
        unsafe { oid_list(get_partition_ancestors(relid)) }
    } else {
        Vec::new()
    };
    RelEntry {
        role,
        identity,
        columns,
        relation_record,
        ancestors,
        sent: false,
        stale: false,
    }
}

/// True when the object (of catalog `class`) belongs to the figoutput extension, so that only the
/// extension's script, or its owner, could have made it.
///
/// # Safety
/// Inside a transaction (catalog scans of pg_extension and pg_depend).
unsafe fn owned_by_extension(class: pg_sys::Oid, objid: pg_sys::Oid) -> bool {
    // SAFETY: catalog scans inside a transaction (the caller's contract); the name is a static C
    // string; missing_ok gives InvalidOid rather than an ERROR.
    unsafe {
        let ext = pg_sys::get_extension_oid(c"figoutput".as_ptr(), true);
        ext != pg_sys::InvalidOid && pg_sys::getExtensionOfObject(class, objid) == ext
    }
}

/// True when figoutput.ddl_log carries the guard the extension script installs: a BEFORE INSERT row
/// trigger, enabled ALWAYS, without a WHEN condition, running a function of the extension
/// (`figoutput.guard_ddl_log()`, the only one that returns `trigger`). The guard refuses every row
/// not inserted by the table's owner, so it is what makes a row of this table proof that the DDL
/// capture wrote it (docs/FIGOUTPUT.md, "Who can produce a trusted DDL record"). A table without it
/// (an install from before the guard, or one whose owner disabled it) proves nothing.
///
/// # Safety
/// `rel` must be an open relation, inside a transaction.
unsafe fn ddl_log_guarded(rel: pg_sys::Relation) -> bool {
    // SAFETY: `rel` is open (the caller's contract). Its relcache entry owns `trigdesc` (NULL
    // when the table has no triggers) and the array of `numtriggers` Trigger structs it points
    // at; the relcache rebuilds them only at invalidation processing, which does not run during
    // this function, so they stay valid while it reads them.
    let triggers = unsafe {
        let trigdesc = (*rel).trigdesc;
        if trigdesc.is_null() || (*trigdesc).triggers.is_null() {
            return false;
        }
        let n = usize::try_from((*trigdesc).numtriggers).unwrap_or(0);
        std::slice::from_raw_parts((*trigdesc).triggers, n)
    };
    const ROW_INSERT: u32 = pg_sys::TRIGGER_TYPE_ROW | pg_sys::TRIGGER_TYPE_INSERT;
    triggers.iter().any(|t| {
        let tgtype = t.tgtype as u16 as u32;
        t.tgenabled == pg_sys::TRIGGER_FIRES_ALWAYS as std::ffi::c_char
            && tgtype & ROW_INSERT == ROW_INSERT
            && tgtype & pg_sys::TRIGGER_TYPE_TIMING_MASK == pg_sys::TRIGGER_TYPE_BEFORE
            && t.tgqual.is_null()
            // SAFETY: a catalog lookup inside a transaction (this function's contract).
            && unsafe { owned_by_extension(pg_sys::ProcedureRelationId, t.tgfoid) }
    })
}

/// The actions the named publications publish for this relation (through the table itself, a
/// partition ancestor, its schema, or FOR ALL TABLES), or `None` when none of them includes it.
///
/// # Safety
/// `rel` must be an open relation, inside a transaction (catalog lookups).
unsafe fn publication_actions(rel: pg_sys::Relation, names: &[String]) -> Option<Actions> {
    // SAFETY: `rel` is open (the caller's contract), so its RelationData and pg_class row are
    // valid for this call.
    let (relid, form) = unsafe { ((*rel).rd_id, &*(*rel).rd_rel) };
    // The relation and, for a partition, every ancestor: publications reach a partition through
    // the partitioned table, and (PostgreSQL 15+) through the schema of any of them.
    let mut lineage = vec![(relid, form.relnamespace)];
    if form.relispartition {
        // SAFETY: catalog lookups inside a transaction (the caller's contract); the list comes
        // back palloc'd in the current context and is copied out at once.
        for ancestor in unsafe { oid_list(get_partition_ancestors(relid)) } {
            // SAFETY: as above; a missing relation gives InvalidOid, not an ERROR.
            lineage.push((ancestor, unsafe { pg_sys::get_rel_namespace(ancestor) }));
        }
    }
    let mut member_of: Vec<pg_sys::Oid> = Vec::new();
    for &(rel_oid, _namespace) in &lineage {
        // SAFETY: catalog scans inside a transaction; each returns a fresh OID list (or NIL)
        // palloc'd in the current context, copied out at once.
        member_of.extend(unsafe { oid_list(pg_sys::GetRelationPublications(rel_oid)) });
        #[cfg(not(any(feature = "pg13", feature = "pg14")))]
        // SAFETY: as above.
        member_of.extend(unsafe { oid_list(pg_sys::GetSchemaPublications(_namespace)) });
    }

    let mut actions: Option<Actions> = None;
    for name in names {
        let Ok(cname) = std::ffi::CString::new(name.as_str()) else {
            continue;
        };
        // A publication that does not exist is an ERROR, as with pgoutput, raised here so that it
        // says what to do.
        // SAFETY: a catalog lookup inside a transaction; `cname` is a NUL-terminated string that
        // outlives the call; missing_ok gives NULL rather than an ERROR.
        let publication = unsafe { pg_sys::GetPublicationByName(cname.as_ptr(), true) };
        if publication.is_null() {
            pgrx::pg_sys::panic::ErrorReport::new(
                pgrx::PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("publication \"{name}\" does not exist"),
                "figoutput",
            )
            .set_detail("Decoding sees the catalog as of each change: a publication dropped since, or created after this slot's position, does not exist for these changes.")
            .set_hint("Create the publication, or (if it was created after the slot) stream from a slot created after it, or start without publication_names.")
            .report(pgrx::PgLogLevel::ERROR);
            unreachable!("an ERROR does not return");
        }
        // SAFETY: non-null, so a Publication struct palloc'd in the current context by
        // GetPublicationByName, owned by no one else and alive for this call.
        let p = unsafe { &*publication };
        if p.alltables || member_of.contains(&p.oid) {
            let a = actions.get_or_insert_with(Actions::default);
            a.insert |= p.pubactions.pubinsert;
            a.update |= p.pubactions.pubupdate;
            a.delete |= p.pubactions.pubdelete;
            a.truncate |= p.pubactions.pubtruncate;
        }
    }
    actions
}

// catalog/partition.h is not among pgrx's bindings; the function is exported by every server.
unsafe extern "C-unwind" {
    #[link_name = "get_partition_ancestors"]
    fn get_partition_ancestors_unguarded(relid: pg_sys::Oid) -> *mut pg_sys::List;
}

/// Calls it behind pgrx's guard, which turns an ERROR inside into a Rust panic and back.
///
/// # Safety
/// Inside a transaction (it scans pg_inherits).
unsafe fn get_partition_ancestors(relid: pg_sys::Oid) -> *mut pg_sys::List {
    // SAFETY: the declaration above matches the C prototype in catalog/partition.h
    // (`List *get_partition_ancestors(Oid relid)`) of every major this crate builds for. The guard
    // catches an ERROR's longjmp before it can cross Rust frames. The result is NIL or an OID list
    // palloc'd in the current context.
    unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| get_partition_ancestors_unguarded(relid)) }
}

/// Copies an OID list (NIL included) into a Vec.
///
/// # Safety
/// `list` must be NIL or a valid OID list (`T_OidList`), alive for the call.
unsafe fn oid_list(list: *mut pg_sys::List) -> Vec<pg_sys::Oid> {
    // SAFETY: the caller's contract; PgList only reads the list here.
    unsafe { pgrx::PgList::<pg_sys::Oid>::from_pg(list) }
        .iter_oid()
        .collect()
}
