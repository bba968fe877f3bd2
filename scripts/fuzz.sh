#!/usr/bin/env bash
# Runs the cargo-fuzz (libFuzzer) targets over pvabi-dispatch (fuzz/, a workspace of its own).
# Not part of the test command: it needs a nightly toolchain, which it installs with rustup
# if missing, and cargo-fuzz, which it installs with `cargo install cargo-fuzz --locked`.
#
#   scripts/fuzz.sh [--time SECONDS] [--runs N] [--jobs J] [--parallel] [--sanitizer S] [TARGET...]
#
# Each target runs for SECONDS (default 60 without --runs) and/or until N executions in all,
# whichever comes first; with no TARGET, every target. --jobs J runs J fuzzing processes per
# target (libFuzzer -jobs/-workers, sharing the corpus; with --runs each runs N/J);
# --parallel runs every target at once instead of one after the other (use the cores with
# one job per target). Fuzzing runs under `nice -n 19`. The sanitizer (cargo fuzz -s) is
# `none` by default: the dispatcher and the harness are safe Rust and the oracles are
# assertions, so AddressSanitizer would mostly cost rate; `--sanitizer address` has it.
# Corpora go to fuzz/corpus/TARGET (not committed: they regenerate), crashes and logs to
# fuzz/artifacts/TARGET. Per target the script prints executions, exec/s and wall time
# (from libFuzzer's final stats) and replays the corpus through the same oracles to print
# what the host answered (the status histogram).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

time=""
runs=""
jobs=1
parallel=""
sanitizer=none
targets=()
while (($#)); do
    case "$1" in
        --time) time="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        --jobs) jobs="$2"; shift 2 ;;
        --parallel) parallel=1; shift ;;
        --sanitizer) sanitizer="$2"; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) targets+=("$1"); shift ;;
    esac
done
all=(single multicall deferred ring negotiate multi_vcpu)
((${#targets[@]})) || targets=("${all[@]}")
[ -z "$time$runs" ] && time=60

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "==> installing the nightly toolchain (cargo-fuzz needs it)"
    rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

limit=()
[ -n "$time" ] && limit+=(-max_total_time="$time")
[ -n "$runs" ] && limit+=(-runs="$(((runs + jobs - 1) / jobs))")
par=()
((jobs > 1)) && par=(-jobs="$jobs" -workers="$jobs")

echo "==> building the fuzz targets (sanitizer $sanitizer)"
for t in "${targets[@]}"; do
    nice -n 19 cargo +nightly fuzz build --fuzz-dir fuzz -s "$sanitizer" "$t" >/dev/null
done
triple=$(rustc -vV | sed -n 's/^host: //p')
bindir="$root/fuzz/target/$triple/release"
cargo build -q --release -p pvabi-fuzz-support --example replay

# Runs target $1 (in the foreground), timing it into fuzz/artifacts/$1/wall.
fuzz_one() {
    local t=$1 corpus="$root/fuzz/corpus/$1" art="$root/fuzz/artifacts/$1" start
    start=$(date +%s)
    # -timeout: an input that runs 10 s is a hang (every loop is bounded, VCPU_HALT short).
    # With -jobs, libFuzzer writes each job's output to fuzz-N.log in the working directory.
    (cd "$art" && nice -n 19 "$bindir/$t" "$corpus" "${limit[@]}" "${par[@]}" \
        -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$art/" >"$art/last-run.log" 2>&1) || true
    echo $(($(date +%s) - start)) >"$art/wall"
}

for t in "${targets[@]}"; do
    mkdir -p "$root/fuzz/corpus/$t" "$root/fuzz/artifacts/$t"
    rm -f "$root/fuzz/artifacts/$t"/fuzz-*.log "$root/fuzz/artifacts/$t/last-run.log"
done
if [ -n "$parallel" ]; then
    echo "==> fuzzing ${targets[*]} at once (${limit[*]} ${par[*]})"
    for t in "${targets[@]}"; do fuzz_one "$t" & done
    wait
fi

summary=()
for t in "${targets[@]}"; do
    corpus="$root/fuzz/corpus/$t"
    art="$root/fuzz/artifacts/$t"
    if [ -z "$parallel" ]; then
        echo "==> fuzz target $t (${limit[*]} ${par[*]})"
        fuzz_one "$t"
    else
        echo "==> fuzz target $t"
    fi
    wall=$(cat "$art/wall")
    logs=("$art/last-run.log")
    ((jobs > 1)) && logs=("$art"/fuzz-*.log)
    grep -hE '^(#[0-9]+.*DONE|stat::|.*panicked|.*oracle violation)' "${logs[@]}" || true
    if grep -qE 'panicked|ERROR: libFuzzer|SUMMARY:' "${logs[@]}"; then
        echo "!! $t found a problem; see ${logs[*]} and $art/" >&2
        summary+=("$t: FAILED")
        continue
    fi
    execs=$(cat "${logs[@]}" | sed -n 's/^stat::number_of_executed_units: *//p' | paste -sd+ | bc)
    rate=$(cat "${logs[@]}" | sed -n 's/^stat::average_exec_per_sec: *//p' | paste -sd+ | bc)
    "$root/target/release/examples/replay" "$t" "$corpus" | tee -a "$art/last-run.log"
    summary+=("$t: ${execs:-?} executions in ${wall} s (${jobs} job(s), libFuzzer's average exec/s summed over jobs ${rate:-?}, overall $((${execs:-0} / (wall > 0 ? wall : 1))) exec/s), corpus $(find "$corpus" -type f | wc -l) inputs")
done
echo "==> summary"
printf '%s\n' "${summary[@]}"
! printf '%s\n' "${summary[@]}" | grep -q FAILED
