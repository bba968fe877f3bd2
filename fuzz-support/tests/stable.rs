//! The fuzz generators and oracles on a fixed set of seeds: a short, stable run inside
//! `cargo test` (the long runs are `scripts/fuzz.sh`).

use pvabi_fuzz_support::{run, seeded_input, Class, Stats};

/// Inputs per class (a few thousand in all, seconds in a debug build).
const CASES: u64 = 800;

#[test]
fn every_class_on_fixed_seeds() {
    for class in Class::ALL {
        let mut stats = Stats::default();
        for seed in 0..CASES {
            let len = 64 + (seed as usize * 37) % 2048;
            let input = seeded_input(seed ^ (class as u64) << 32, len);
            match run(class, &input) {
                Ok(s) => stats.merge(&s),
                Err(v) => panic!("{} seed {seed}: {v}", class.name()),
            }
        }
        println!("{}: {stats}", class.name());
        assert!(stats.statuses.get("SUCCESS").copied().unwrap_or(0) > 0);
    }
}

#[test]
#[ignore]
fn debug_one() {
    let class = Class::ALL[std::env::var("CLASS").unwrap().parse::<usize>().unwrap()];
    let seed: u64 = std::env::var("SEED").unwrap().parse().unwrap();
    let len = 64 + (seed as usize * 37) % 2048;
    let input = seeded_input(seed ^ (class as u64) << 32, len);
    std::env::set_var("PVABI_FUZZ_TRACE", "1");
    println!("{:?}", run(class, &input));
}
