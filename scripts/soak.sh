#!/usr/bin/env bash
# The long load run on KVM (not part of the test command): 8 vCPUs issuing mixed calls in every
# mode (direct, MULTICALL, deferred, doorbell and host-polled rings, events between vCPUs),
# RUNS VMs one after another, ROUNDS rounds per vCPU each. After every VM the completion
# counts of guest and host must agree exactly and no thread or descriptor may be left behind;
# at the end the process's RSS must not have grown by more than 16 MiB.
#
#   scripts/soak.sh [--rounds ROUNDS] [--runs RUNS]     (defaults: 20000 rounds, 5 runs)
#
# The same test with few rounds runs in the test command (hostile_load_8_vcpus_mixed_modes).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=20000
runs=5
while (($#)); do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

PVABI_SOAK_ROUNDS="$rounds" PVABI_SOAK_RUNS="$runs" \
    cargo test --locked -p pvabi-host --test load_faults hostile_load_soak -- \
    --ignored --nocapture
