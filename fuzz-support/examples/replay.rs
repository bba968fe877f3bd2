//! Replays every file of a corpus directory as inputs of one class through the oracles and
//! prints what the host answered (a status histogram): `replay CLASS DIR`.

use pvabi_fuzz_support::{run, Class, Stats};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(class), Some(dir)) = (args.next(), args.next()) else {
        eprintln!("usage: replay CLASS DIR (CLASS: single, multicall, deferred, ring, negotiate, multi_vcpu)");
        std::process::exit(2);
    };
    let Some(class) = Class::ALL.into_iter().find(|c| c.name() == class) else {
        eprintln!("unknown class {class}");
        std::process::exit(2);
    };
    let mut stats = Stats::default();
    let mut failed = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let data = std::fs::read(&path).unwrap_or_default();
        match run(class, &data) {
            Ok(s) => stats.merge(&s),
            Err(v) => {
                failed += 1;
                eprintln!("{}: {v}", path.display());
            }
        }
    }
    println!("{} corpus: {stats}", class.name());
    if failed > 0 {
        eprintln!("{failed} inputs failed an oracle");
        std::process::exit(1);
    }
}
