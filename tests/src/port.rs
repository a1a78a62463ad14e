//! Picks TCP ports for clusters. The kernel hands out a free port when binding to port 0; the port
//! is released again before the postmaster binds it, so another process can take it in between.
//! The server start retries on a clash; this module only avoids handing one port to two clusters of
//! the same process.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;

/// Ports of this process's live clusters.
static IN_USE: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A port that was free on 127.0.0.1 a moment ago and is not used by another cluster of ours.
pub(crate) fn pick() -> std::io::Result<u16> {
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        if IN_USE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(port)
        {
            return Ok(port);
        }
    }
}

/// Gives `port` back once its cluster is gone or never bound it.
pub(crate) fn release(port: u16) {
    IN_USE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&port);
}
