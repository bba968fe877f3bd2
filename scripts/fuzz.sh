#!/usr/bin/env bash
# Runs the cargo-fuzz (libFuzzer) targets over pvabi-dispatch (fuzz/, a workspace of its own).
# Not part of the test command: it needs a nightly toolchain, which it installs with rustup
# if missing, and cargo-fuzz, which it installs with `cargo install cargo-fuzz --locked`.
#
#   scripts/fuzz.sh [--time SECONDS | --runs N] [TARGET...]
#
# Each target runs for SECONDS (default 60) or N executions; with no TARGET, every target.
# Corpora go to fuzz/corpus/TARGET (not committed: they regenerate), crashes to
# fuzz/artifacts/TARGET. After each target the corpus is replayed through the same oracles
# and the status histogram is printed; the last lines summarise executions and rates.
set -euo pipefail
cd "$(dirname "$0")/.."

time=60
runs=""
targets=()
while (($#)); do
    case "$1" in
        --time) time="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) targets+=("$1"); shift ;;
    esac
done
all=(single multicall deferred ring negotiate multi_vcpu)
((${#targets[@]})) || targets=("${all[@]}")

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "==> installing the nightly toolchain (cargo-fuzz needs it)"
    rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

limit=(-max_total_time="$time")
[ -n "$runs" ] && limit=(-runs="$runs")
summary=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    echo "==> fuzz target $t (${limit[*]})"
    log="fuzz/artifacts/$t/last-run.log"
    # -timeout: an input that runs 10 s is a hang (every loop is bounded, VCPU_HALT short).
    if ! cargo +nightly fuzz run --fuzz-dir fuzz "$t" "fuzz/corpus/$t" -- \
        "${limit[@]}" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" 2>&1 | tee "$log" | grep -E '^(#[0-9]+.*(DONE|pulse)|==|stat::|Done|.*panicked|.*oracle violation)' ; then
        :
    fi
    if grep -qE 'panicked|ERROR: libFuzzer|SUMMARY:' "$log"; then
        echo "!! $t found a problem; see $log and fuzz/artifacts/$t/" >&2
        summary+=("$t: FAILED")
        continue
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cargo run -q --release -p pvabi-fuzz-support --example replay -- "$t" "fuzz/corpus/$t" | tee -a "$log"
    summary+=("$t: ${execs:-?} executions, ${rate:-?} exec/s, corpus $(find "fuzz/corpus/$t" -type f | wc -l) inputs")
done
echo "==> summary"
printf '%s\n' "${summary[@]}"
! printf '%s\n' "${summary[@]}" | grep -q FAILED
