//! Runs fixed-seed inputs of each class through the oracles and prints inputs per second:
//! `speed [SECONDS_PER_CLASS] [CLASS...]` (a figure, not a test). Also per second of the
//! process's CPU time (user + system, from /proc/self/stat), which other load on the machine
//! does not change as much.

use std::time::{Duration, Instant};

use pvabi_fuzz_support::{run, seeded_input, Class};

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let names: Vec<String> = args.collect();
    for class in Class::ALL {
        if !names.is_empty() && !names.iter().any(|n| n == class.name()) {
            continue;
        }
        let cpu0 = cpu_seconds();
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_secs_f64(secs) {
            let len = 64 + (n as usize * 37) % 2048;
            let input = seeded_input(n ^ (class as u64) << 32, len);
            if let Err(v) = run(class, &input) {
                panic!("{} seed {n}: {v}", class.name());
            }
            n += 1;
        }
        let t = start.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu0;
        println!(
            "{:<10} {n:>8} inputs in {t:.2} s: {:>8.0} inputs/s, {:>8.0} inputs per CPU second",
            class.name(),
            n as f64 / t,
            n as f64 / cpu.max(0.01)
        );
    }
}

/// User + system CPU time of this process so far (clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |r| r.1);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}
