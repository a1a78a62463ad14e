//! `figoutput.statement_text(query)`: the DDL capture keeps a statement's text only when the query
//! string the client sent holds that one statement. `current_query()` is the whole string, so
//! `ALTER TABLE t …; ALTER ROLE app PASSWORD '…'` would otherwise put the second statement, password
//! and all, into the WAL and every sink.

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgList;

/// The text of the only statement in `query` (trimmed), or NULL when it holds none or several.
/// Split by PostgreSQL's own raw parser, so quotes, comments and dollar quoting are PostgreSQL's.
#[pg_extern(immutable, parallel_safe, strict)]
fn statement_text(query: &str) -> Option<String> {
    let c = std::ffi::CString::new(query).ok()?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call; the returned list and its
    // nodes live in the current memory context, read here only. A syntax error is raised as an
    // ERROR, which pgrx turns into this function's error (the capture then keeps no text).
    let list = unsafe {
        #[cfg(feature = "pg13")]
        let list = pg_sys::raw_parser(c.as_ptr());
        #[cfg(not(feature = "pg13"))]
        let list = pg_sys::raw_parser(c.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT);
        PgList::<pg_sys::RawStmt>::from_pg(list)
    };
    if list.len() != 1 {
        return None;
    }
    // SAFETY: a list of one RawStmt, as raw_parser returns in the default mode.
    let stmt = unsafe { &*list.head()? };
    let start = usize::try_from(stmt.stmt_location).ok()?;
    let text = match stmt.stmt_len {
        0 => query.get(start..)?,
        len => query.get(start..start + usize::try_from(len).ok()?)?,
    };
    Some(text.trim().to_string())
}
