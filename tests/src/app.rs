//! An application writing beside the receiver: one connection committing a transaction again and
//! again on its own thread until stopped, so tests copy, stream and kill under concurrent writes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub struct AppWriter {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl AppWriter {
    /// Runs `transaction(n)` (the SQL of the n-th transaction, n from 1) on `client`, pausing
    /// `pause` between transactions. A failed transaction fails the test when it is stopped.
    pub fn start(
        mut client: postgres::Client,
        pause: Duration,
        transaction: impl Fn(u64) -> String + Send + 'static,
    ) -> AppWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    client
                        .batch_execute(&transaction(n))
                        .unwrap_or_else(|e| panic!("the application's transaction {n}: {e}"));
                    std::thread::sleep(pause);
                }
                n
            })
        };
        AppWriter { stop, thread }
    }

    /// Stops it; returns how many transactions it committed.
    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the application thread panicked")
    }
}

/// pgbench-like: one account's balance updated and a history row (a table without a key)
/// inserted per transaction, over accounts `1..=accounts`.
pub fn ledger_transaction(accounts: u64) -> impl Fn(u64) -> String + Send + 'static {
    move |n| {
        format!(
            "BEGIN; UPDATE accounts SET abalance = abalance + 1 WHERE aid = {0};
             INSERT INTO history VALUES (1, 1, {0}, 1, now(), 'w'); COMMIT;",
            n % accounts + 1
        )
    }
}
