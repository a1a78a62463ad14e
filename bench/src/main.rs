//! `fig-bench`: runs the project and its baselines side by side on one throwaway server, in one
//! run, and prints ratios. Absolute times on these machines are noisy; ratios from one run are not.
//!
//! `bench/run decode [--rows N] [--repeat K]` (installs the release build of figoutput first).
//! `bench/run receive [--rows N] [--txn-rows T] [--repeat K] [--latency-secs S]`.
//! `bench/run snapshot [--rows N] [--repeat K] [--parallel P]`.
//! `bench/run resync [--rows N] [--rounds K] [--rate R]`.

mod binary;
mod decode;
mod receive;
mod report;
mod resync;
mod snapshot;
mod workload;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => ("help", &[][..]),
    };
    let flag_str = |name: &str| -> Option<&str> {
        rest.iter()
            .position(|a| a == name)
            .and_then(|i| rest.get(i + 1))
            .map(|s| s.as_str())
    };
    let flag = |name: &str, default: u64| -> u64 {
        flag_str(name)
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| die(&format!("{name} takes a whole number, got {v:?}")))
            })
            .unwrap_or(default)
    };
    match cmd {
        "decode" => decode::run(
            flag("--rows", 1_000_000),
            flag("--repeat", 3) as usize,
            flag_str("--work-mem").unwrap_or("64MB"),
        ),
        "receive" => receive::run(receive::Options {
            rows: flag("--rows", 1_000_000),
            txn_rows: flag("--txn-rows", 1_000).max(1),
            repeat: flag("--repeat", 1).max(1) as usize,
            latency_secs: flag("--latency-secs", 20).max(1),
            latency_rate: 5_000,
            latency_txn_rows: 50,
        }),
        "snapshot" => snapshot::run(snapshot::Options {
            rows: flag("--rows", 10_000_000),
            repeat: flag("--repeat", 1).max(1) as usize,
            parallel: flag("--parallel", 2).max(2),
        }),
        "resync" => resync::run(resync::Options {
            rows: flag("--rows", 1_000_000).max(1),
            // `--repeat`, as the other cases call it, is taken too.
            rounds: flag("--rounds", flag("--repeat", 3)).max(1) as usize,
            rate: flag("--rate", 2_000).max(1),
        }),
        _ => {
            eprintln!("usage: fig-bench decode [--rows N] [--repeat K] [--work-mem 64MB]");
            eprintln!(
                "       fig-bench receive [--rows N] [--txn-rows T] [--repeat K] [--latency-secs S]"
            );
            eprintln!("       fig-bench snapshot [--rows N] [--repeat K] [--parallel P]");
            eprintln!("       fig-bench resync [--rows N] [--rounds K] [--rate R]");
            std::process::exit(2);
        }
    }
}

fn die(msg: &str) -> ! {
    eprintln!("fig-bench: {msg}");
    std::process::exit(2)
}
