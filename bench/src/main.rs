//! `fig-bench`: runs the project and its baselines side by side on one throwaway server, in one
//! run, and prints ratios. Absolute times on these machines are noisy; ratios from one run are not.
//!
//! `bench/run decode [--rows N] [--repeat K]` (installs the release build of figoutput first).

mod decode;
mod workload;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => ("help", &[][..]),
    };
    let flag = |name: &str, default: u64| -> u64 {
        rest.iter()
            .position(|a| a == name)
            .and_then(|i| rest.get(i + 1))
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| die(&format!("{name} takes a whole number, got {v:?}")))
            })
            .unwrap_or(default)
    };
    match cmd {
        "decode" => decode::run(flag("--rows", 1_000_000), flag("--repeat", 3) as usize),
        _ => {
            eprintln!("usage: fig-bench decode [--rows N] [--repeat K]");
            std::process::exit(2);
        }
    }
}

fn die(msg: &str) -> ! {
    eprintln!("fig-bench: {msg}");
    std::process::exit(2)
}
