//! The Prometheus endpoint (`[metrics] listen`): every counter and gauge the receiver records,
//! served as text at `http://LISTEN/metrics`.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `fig_rows_delivered_total` | counter | rows made durable in the sink by the stream |
//! | `fig_transactions_delivered_total` | counter | source transactions made durable |
//! | `fig_durable_lsn_bytes` | gauge | the last durable commit end LSN, as a byte position |
//! | `fig_lag_bytes` | gauge | server WAL end minus the durable position |
//! | `fig_schema_changes_total` | counter | `table`, `kind` (see `drift.rs`) |

use std::net::SocketAddr;
use thiserror::Error;

#[derive(Debug, Error)]
#[error("cannot serve metrics on {addr} (metrics.listen): {reason}; choose a free port or remove the setting")]
pub struct MetricsError {
    addr: SocketAddr,
    reason: String,
}

/// Starts the endpoint on the current tokio runtime. Before this, metrics are recorded nowhere.
pub fn serve(addr: SocketAddr) -> Result<(), MetricsError> {
    // Bind first, so a taken port is this error and not a background task's log line.
    std::net::TcpListener::bind(addr).map_err(|e| MetricsError {
        addr,
        reason: e.to_string(),
    })?;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| MetricsError {
            addr,
            reason: e.to_string(),
        })
}
