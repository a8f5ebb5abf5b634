#!/usr/bin/env bash
# One command from a fresh Debian or Ubuntu host (as root) to a running
# unsandbox: installs and starts LXD with its storage, builds the small
# image, builds the binary (installing Rust with rustup if cargo is absent),
# then serves the execution API on 127.0.0.1:8080 with the sample pools in
# manifests/samples/ (edit them while it runs: changes apply live).
# Extra arguments go to `unsandbox standalone`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

[[ $(id -u) -eq 0 ]] || { echo "quickstart: run as root (LXD needs it)" >&2; exit 1; }

images/lxd-host.sh
images/build.sh small

if ! command -v cargo >/dev/null 2>&1; then
    [[ -x $HOME/.cargo/bin/cargo ]] || {
        echo "== installing Rust with rustup"
        command -v curl >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq curl ca-certificates build-essential; }
        curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    }
    export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cc >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq build-essential; }

echo "== building unsandbox"
cargo build --release --locked
echo "== serving on http://127.0.0.1:8080 (Ctrl-C stops; warm containers stay for the next start)"
exec target/release/unsandbox standalone --config manifests/samples "$@"
