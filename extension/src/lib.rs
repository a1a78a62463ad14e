//! figoutput: a logical decoding output plugin that emits compact, typed MessagePack change records.
//!
//! A DBA installs it (`CREATE EXTENSION figoutput`, and `figoutput` in `output_plugin_libraries` on
//! servers that have that setting); fig-receiver, or anything that reads `docs/FORMAT.md`, consumes
//! the slot. The record format is defined once, in the `fig-format` crate, shared with the receiver.
//!
//! Modules: [`callbacks`] (one function per decoding callback), [`session`] (per-slot state and the
//! output buffer), [`relation`] (the relation cache and RELATION records), [`values`] (how each type
//! is encoded), [`text`] (server encoding to UTF-8), [`options`] and [`table_filter`] (pure option
//! parsing).

// Every unsafe operation sits in an `unsafe` block of its own, with a `// SAFETY:` comment saying
// which pointer is valid and why, for how long, and who owns it; also inside `unsafe fn`s.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

use pgrx::pg_sys;
use pgrx::prelude::*;

pub mod callbacks;
pub mod numeric;
pub mod options;
pub mod relation;
pub mod session;
pub mod statement;
pub mod table_filter;
pub mod text;
pub mod values;

::pgrx::pg_module_magic!(name, version);

// The DDL capture: a protected log table, the event trigger function and its triggers.
pgrx::extension_sql_file!("../sql/ddl_capture.sql", name = "ddl_capture", finalize);

/// Runs once when the library is loaded into a backend. An ERROR raised through Rust code must
/// say what is wrong, not how the code got there: pgrx puts a captured Rust backtrace into the
/// DETAIL (sent to the client and written to the server log) whenever `RUST_BACKTRACE` is set in
/// the server's environment. `RUST_LIB_BACKTRACE=0` turns capturing off for this process.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // SAFETY: set_var is unsound only while another thread reads or writes the environment. A
    // PostgreSQL backend runs one thread, figoutput starts none, and _PG_init runs while the library
    // is being loaded, before any of its code runs.
    unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
}

/// The entry point PostgreSQL looks up when a slot names `figoutput` as its plugin.
///
/// # Safety
/// Called by PostgreSQL with a valid callbacks struct.
#[unsafe(no_mangle)]
#[pg_guard]
pub unsafe extern "C-unwind" fn _PG_output_plugin_init(cb: *mut pg_sys::OutputPluginCallbacks) {
    use callbacks::*;
    // SAFETY: LoadOutputPlugin (replication/logical/logical.c) passes a pointer to the callbacks
    // struct embedded in the LogicalDecodingContext it is building: non-null, aligned, zeroed, and
    // not touched by anyone else until this function returns. The reference does not outlive it.
    let cb = unsafe { &mut *cb };
    cb.startup_cb = Some(startup);
    cb.shutdown_cb = Some(shutdown);
    cb.begin_cb = Some(begin);
    cb.change_cb = Some(change);
    cb.truncate_cb = Some(truncate);
    cb.commit_cb = Some(commit);
    cb.message_cb = Some(message);
    cb.filter_by_origin_cb = Some(filter_by_origin);
    #[cfg(not(feature = "pg13"))]
    {
        cb.stream_start_cb = Some(stream_start);
        cb.stream_stop_cb = Some(stream_stop);
        cb.stream_abort_cb = Some(stream_abort);
        cb.stream_commit_cb = Some(stream_commit);
        // The same functions serve inside stream blocks: the session knows when one is open.
        cb.stream_change_cb = Some(change);
        cb.stream_message_cb = Some(message);
        cb.stream_truncate_cb = Some(truncate);
    }
}

/// The record format version this plugin writes (also the `format_version` option it accepts).
#[pg_extern(immutable, parallel_safe)]
fn format_version() -> i32 {
    fig_format::FORMAT_VERSION as i32
}

#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}
    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
