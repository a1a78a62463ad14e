//! Text leaves PostgreSQL as UTF-8, whatever the database encoding.

use crate::values::ValueError;
use pgrx::pg_sys;
use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbEncoding {
    Utf8,
    /// SQL_ASCII declares no encoding: bytes pass through only when they are valid UTF-8.
    SqlAscii,
    /// Any other server encoding: converted with the server's own conversion functions.
    Other(i32),
}

impl DbEncoding {
    pub fn current() -> DbEncoding {
        // SAFETY: GetDatabaseEncoding reads a backend global that is set once the backend is
        // connected to its database, before any decoding callback or SQL function runs.
        let enc = unsafe { pg_sys::GetDatabaseEncoding() };
        match enc as u32 {
            e if e == pg_sys::pg_enc::PG_UTF8 => DbEncoding::Utf8,
            e if e == pg_sys::pg_enc::PG_SQL_ASCII => DbEncoding::SqlAscii,
            _ => DbEncoding::Other(enc),
        }
    }
}

/// Converts server-encoded bytes to UTF-8. A conversion failure raises the server's own ERROR;
/// SQL_ASCII bytes that are not UTF-8 are refused rather than guessed at.
pub fn to_utf8(raw: &[u8], db: DbEncoding) -> Result<Cow<'_, [u8]>, ValueError> {
    match db {
        DbEncoding::Utf8 => Ok(Cow::Borrowed(raw)),
        DbEncoding::SqlAscii => match std::str::from_utf8(raw) {
            Ok(_) => Ok(Cow::Borrowed(raw)),
            Err(e) => Err(ValueError::Encoding(format!(
                "text in this SQL_ASCII database is not valid UTF-8 (byte {}); figoutput does not guess \
                 an encoding: fix the data or recreate the database with a real encoding",
                e.valid_up_to()
            ))),
        },
        DbEncoding::Other(_) => {
            if raw.is_ascii() {
                return Ok(Cow::Borrowed(raw));
            }
            let len = i32::try_from(raw.len())
                .map_err(|_| ValueError::Encoding("text value larger than 2 GiB".into()))?;
            // SAFETY: `raw` is a live slice of `len` bytes for the whole call; pg_server_to_any
            // reads exactly `len` of them (no terminator needed) and either returns `raw`'s own
            // pointer (nothing to convert) or a new NUL-terminated string palloc'd in the current
            // memory context. An invalid byte sequence raises an ERROR (pgrx's guard turns it into
            // a Rust panic that unwinds to the callback's guard), never a bad pointer.
            let p = unsafe {
                pg_sys::pg_server_to_any(
                    raw.as_ptr() as *const std::ffi::c_char,
                    len,
                    pg_sys::pg_enc::PG_UTF8 as i32,
                )
            };
            if p as *const u8 == raw.as_ptr() {
                Ok(Cow::Borrowed(raw))
            } else {
                // SAFETY: a converted result: NUL-terminated, in the current memory context, which
                // is not reset before this copy is taken. Server text holds no NUL byte, so the
                // terminator is the end of the value.
                Ok(Cow::Owned(unsafe { std::ffi::CStr::from_ptr(p) }.to_bytes().to_vec()))
            }
        }
    }
}
