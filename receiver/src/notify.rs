//! Schema-change notifications: a log line, a metric, and a JSON document POSTed to a webhook, so the
//! owners of reports on the table can review the change.
//!
//! ```text
//! sink (after its commit) ──notify(change)──▶ warn! log line + fig_schema_changes_total{table,kind}
//!                                      └─try_send──▶ bounded queue ──▶ webhook thread: POST, retried
//! ```
//!
//! `notify` never blocks the caller: the queue is bounded and a full queue drops the notification
//! with an error in the log (the change itself is in the sink's history either way). The webhook
//! thread retries connection failures, 429 and 5xx with exponential backoff (1 s doubling, at most
//! 60 s apart) up to `attempts` times; other answers are final. The metric is recorded through the
//! `metrics` facade: it is exported once a recorder is installed (none is, yet).

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::drift::SchemaChange;

/// Notifications waiting for the webhook at most.
pub const QUEUE: usize = 1_000;

/// Where notifications go besides the log.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub url: String,
    pub timeout: Duration,
    pub attempts: u32,
    /// Extra request headers (name, value), e.g. an Authorization from the environment.
    pub headers: Vec<(String, String)>,
}

impl WebhookConfig {
    /// The URL's scheme, host and port only: what logs and `Debug` show. Its path, query and user
    /// part often carry a token.
    pub fn endpoint(&self) -> String {
        let (scheme, rest) = self.url.split_once("://").unwrap_or(("", &self.url));
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        format!("{scheme}://{host}/…")
    }
}

/// Header values and the URL's path are secrets: never printed.
impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("endpoint", &self.endpoint())
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(k, _)| (k, "***"))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// What went wrong with a POST, without the URL (ureq's own message starts with it).
fn failure(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Status(code, _) => format!("HTTP {code}"),
        ureq::Error::Transport(t) => {
            let io = std::error::Error::source(t)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            format!("{}{io}", t.kind())
        }
    }
}

/// Sends schema-change notifications.
pub struct Notifier {
    queue: Option<SyncSender<String>>,
    worker: Option<JoinHandle<()>>,
}

impl Notifier {
    /// A notifier that logs and counts only.
    pub fn log_only() -> Notifier {
        Notifier {
            queue: None,
            worker: None,
        }
    }

    /// A notifier that also POSTs to `webhook` from its own thread.
    pub fn new(webhook: Option<WebhookConfig>) -> Notifier {
        let Some(cfg) = webhook else {
            return Notifier::log_only();
        };
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let worker = std::thread::Builder::new()
            .name("fig-webhook".into())
            .spawn(move || deliver(cfg, rx))
            .ok();
        Notifier {
            queue: worker.as_ref().map(|_| tx),
            worker,
        }
    }

    /// Logs, counts and queues `change`; returns at once.
    pub fn notify(&self, change: &SchemaChange) {
        let kinds: Vec<&str> = change.changes.iter().map(|c| c.kind()).collect();
        tracing::warn!(
            table = %change.name(),
            changes = %kinds.join(","),
            flagged = change.flagged,
            lsn = change.lsn.as_deref().unwrap_or("-"),
            source = change.source,
            detail = %change.to_json(),
            "schema change"
        );
        for kind in &kinds {
            metrics::counter!("fig_schema_changes_total", "table" => change.name(), "kind" => *kind)
                .increment(1);
        }
        self.post(change.to_json(), &change.name());
    }

    /// Logs, counts and queues the news that a table went out of sync; returns at once.
    pub fn notify_out_of_sync(&self, table: &crate::sink::sqlite::TableState) {
        Notifier::log_out_of_sync(table);
        let mut doc = format!("{{\"event\":\"table_{}\",\"schema\":", table.state);
        crate::sink::json::push_str(&mut doc, &table.schema);
        doc.push_str(",\"table\":");
        crate::sink::json::push_str(&mut doc, &table.table);
        doc.push_str(",\"since_lsn\":");
        crate::sink::json::push_str(&mut doc, &table.since.to_string());
        doc.push_str(",\"reason\":");
        crate::sink::json::push_str(&mut doc, &table.reason);
        doc.push('}');
        self.post(doc, &table.name());
    }

    /// The log line and the counter of a table gone out of sync (also without a notifier).
    pub fn log_out_of_sync(table: &crate::sink::sqlite::TableState) {
        if table.state == crate::sink::sqlite::COPY_PENDING {
            tracing::warn!(
                table = %table.name(),
                since = %table.since,
                reason = %table.reason,
                "table waits for a re-copy: its mirror is kept up to date but not known to equal the source until then"
            );
            metrics::counter!("fig_tables_copy_pending_total", "table" => table.name())
                .increment(1);
            return;
        }
        tracing::error!(
            table = %table.name(),
            since = %table.since,
            reason = %table.reason,
            "table out of sync: its mirror is no longer updated, its changes are kept in the history (_fig_changes); the other tables go on streaming"
        );
        metrics::counter!("fig_tables_out_of_sync_total", "table" => table.name()).increment(1);
    }

    /// Queues `doc` for the webhook, if there is one.
    fn post(&self, doc: String, table: &str) {
        if let Some(q) = &self.queue {
            match q.try_send(doc) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => tracing::error!(
                    table = %table,
                    "the webhook queue is full ({QUEUE} notifications): this one is dropped (it is in the sink's history)"
                ),
                Err(TrySendError::Disconnected(_)) => tracing::error!(
                    table = %table,
                    "the webhook thread is gone: the notification is dropped (it is in the sink's history)"
                ),
            }
        }
    }

    /// Stops taking notifications and gives the webhook thread until `deadline` to send what is
    /// queued.
    pub fn shutdown(mut self, deadline: Duration) {
        self.drain(deadline);
    }

    fn drain(&mut self, deadline: Duration) {
        drop(self.queue.take());
        if let Some(w) = self.worker.take() {
            let until = Instant::now() + deadline;
            while !w.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// When the receiver ends (a paused table stops it), what is queued still gets a few seconds.
impl Drop for Notifier {
    fn drop(&mut self) {
        self.drain(DRAIN_AT_EXIT);
    }
}

/// How long an ending receiver waits for queued webhook notifications.
const DRAIN_AT_EXIT: Duration = Duration::from_secs(5);

/// The webhook thread: POSTs each document, retrying as the module documentation says.
fn deliver(cfg: WebhookConfig, rx: Receiver<String>) {
    let agent = ureq::AgentBuilder::new().timeout(cfg.timeout).build();
    for body in rx {
        let mut delay = Duration::from_secs(1);
        for attempt in 1..=cfg.attempts.max(1) {
            let mut req = agent.post(&cfg.url).set("Content-Type", "application/json");
            for (k, v) in &cfg.headers {
                req = req.set(k, v);
            }
            let retry = match req.send_string(&body) {
                Ok(_) => break,
                Err(ureq::Error::Status(code, _)) if code == 429 || code >= 500 => {
                    format!("HTTP {code}")
                }
                Err(ureq::Error::Status(code, _)) => {
                    tracing::error!(webhook = %cfg.endpoint(), status = code, "the webhook refused the schema-change notification; not retried");
                    break;
                }
                Err(e) => failure(&e),
            };
            if attempt == cfg.attempts.max(1) {
                tracing::error!(webhook = %cfg.endpoint(), attempts = attempt, error = %retry, "giving up on a schema-change notification (it is in the sink's schema history)");
                break;
            }
            tracing::warn!(webhook = %cfg.endpoint(), attempt, error = %retry, retry_in_secs = delay.as_secs(), "webhook failed; retrying");
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(60));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::{ColumnChange, SchemaChange};
    use crate::model::Relation;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    fn change() -> SchemaChange {
        let rel = Relation {
            relid: 1,
            schema: "public".into(),
            table: "t".into(),
            columns: vec![],
        };
        SchemaChange::new(
            &rel,
            None,
            crate::drift::Source::Relation,
            vec![ColumnChange::Dropped {
                column: "a".into(),
                type_name: "text".into(),
            }],
        )
    }

    /// A real HTTP server on 127.0.0.1 answering `statuses` in turn (then 200), recording bodies.
    fn server(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&bodies);
        std::thread::spawn(move || {
            let mut statuses = statuses.into_iter();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                let status = statuses.next().unwrap_or(200);
                if status == 200 {
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&body).into_owned());
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        (url, bodies)
    }

    #[test]
    fn a_failing_webhook_is_retried_until_it_takes_the_document_once() {
        let (url, bodies) = server(vec![500, 503]);
        let n = Notifier::new(Some(WebhookConfig {
            url,
            timeout: Duration::from_secs(5),
            attempts: 5,
            headers: vec![],
        }));
        let started = Instant::now();
        n.notify(&change());
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "notify must not wait for the webhook"
        );
        n.shutdown(Duration::from_secs(20));
        let got = bodies.lock().unwrap().clone();
        assert_eq!(got.len(), 1, "{got:?}");
        let v: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
        assert_eq!(v["event"], "schema_change");
        assert_eq!(v["changes"][0]["kind"], "dropped");
    }

    #[test]
    fn the_webhook_url_path_and_header_values_are_never_printed() {
        let cfg = WebhookConfig {
            url: "https://user:pw-SECRET@hooks.example.com:8443/T0KEN-SECRET?key=SECRET".into(),
            timeout: Duration::from_secs(1),
            attempts: 1,
            headers: vec![("Authorization".into(), "Bearer SECRET".into())],
        };
        let shown = format!("{cfg:?} {}", cfg.endpoint());
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(
            shown.contains("https://hooks.example.com:8443/") && shown.contains("Authorization")
        );
        // A refused connection is described without the URL.
        let e = ureq::get("http://127.0.0.1:1/SECRET-path")
            .call()
            .unwrap_err();
        let text = failure(&e);
        assert!(!text.contains("SECRET") && !text.is_empty(), "{text}");
    }

    #[test]
    fn a_webhook_that_never_answers_does_not_block_and_a_full_queue_drops() {
        // Accepts connections but never answers.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let _hold = std::thread::spawn(move || {
            let mut open = Vec::new();
            for s in listener.incoming() {
                open.push(s);
            }
        });
        let n = Notifier::new(Some(WebhookConfig {
            url,
            timeout: Duration::from_secs(30),
            attempts: 1,
            headers: vec![],
        }));
        let started = Instant::now();
        for _ in 0..(QUEUE + 50) {
            n.notify(&change());
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "notify blocked: {:?}",
            started.elapsed()
        );
    }
}
