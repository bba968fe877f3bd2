#!/usr/bin/env bash
# Runs every pvabi check and test. This is the README's test command, and CI runs exactly it.
#
# Beyond the Rust toolchain the tests need C compilers (the header is compiled with gcc, g++
# and clang; the C guest is built with gcc) and objdump (binutils: the x86 decoder of the
# checking host is compared with it on the guest images). Missing ones are installed with apt-get when this
# runs as root; otherwise the script says what to install.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in gcc g++ clang objdump; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    packages=()
    for tool in "${missing[@]}"; do
        case "$tool" in objdump) packages+=(binutils) ;; *) packages+=("$tool") ;; esac
    done
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> installing ${packages[*]} (needed by the header, C-guest and decoder tests)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
    else
        echo "error: missing ${missing[*]}; install them (Debian: sudo apt-get install -y ${packages[*]})" >&2
        exit 1
    fi
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy (workspace, all targets, warnings are errors; default features, then the self-test build)"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --workspace --all-targets --locked --features pvabi/self-test -- -D warnings
echo "==> bare-metal guests (guest-ref/bare, a workspace of its own): fmt and clippy"
# The guests are built without SSE; rustc notes that `-sse2` will one day be an error for
# this target (rust-lang/rust#116344). That notice is expected and is not a lint.
(
    cd guest-ref/bare
    cargo fmt --all -- --check
    CARGO_ENCODED_RUSTFLAGS=$'-Ctarget-feature=-sse,-sse2\x1f-Crelocation-model=static\x1f-Cno-redzone=yes' \
        cargo clippy --locked --release --target x86_64-unknown-linux-gnu \
        --target-dir ../../target/bare-clippy -- -D warnings
)
echo "==> cargo doc (workspace; a broken or ambiguous intra-doc link is an error)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
echo "==> cargo test (workspace; with the self-test feature, so that pvabi conform --self-test runs)"
cargo test --workspace --locked --features pvabi/self-test
