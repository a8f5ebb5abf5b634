#!/usr/bin/env bash
# The whole unsandbox test suite, on a Debian host as root:
#   1. installs and starts LXD with its storage (images/lxd-host.sh),
#   2. builds the small test image (skipped when it is up to date),
#   3. checks formatting and lints, and the Helm chart and kustomize base
#      offline (helm lint/template, kubectl kustomize),
#   4. installs the real npm Piston client the Piston API is tested with,
#   5. runs the unit tests, the end-to-end tests against the real LXD, and the
#      real-cluster tests (tests/cluster.rs: etcd and kube-apiserver started on
#      loopback) when a kube-apiserver binary is there
#      (UNSANDBOX_KUBE_APISERVER, PATH or /usr/local/bin; README),
#   6. measures language detection on a held-out corpus of Debian sources
#      (tests/detection/corpus.sh, 34 languages, packages the model was
#      never trained on) and fails below 90% top-1 accuracy (measured:
#      91.8%; the target of 95% is not reached yet, see README),
#   7. fuzzes the running server against the contract it serves
#      (GET /openapi.json) with schemathesis, with and without tokens
#      (tests/fuzz/run.sh: a few minutes, bounded in cases and time),
#   8. fails if any test left a container or an LXD project behind.
# Usage: tests/run.sh   (extra arguments go to `cargo test`)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== %s\n' "$*"; }

step "tools the suite uses (kubectl, npm, curl, openssl, ip, python3; Debian packages when missing)"
need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v kubectl >/dev/null 2>&1 || need+=(kubernetes-client)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if ((${#need[@]})); then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

step "LXD host"
images/lxd-host.sh
step "small test image"
images/build.sh small

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

step "Kubernetes manifests (offline)"
tests/k8s-static.sh

step "Piston client (npm piston-client, for tests/e2e_piston.rs)"
if ! command -v npm >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
npm ci --prefix tests/piston --no-audit --no-fund --loglevel=error

step "real Kubernetes control plane (tests/cluster.rs)"
apiserver=${UNSANDBOX_KUBE_APISERVER:-}
[[ -n $apiserver ]] || apiserver=$(command -v kube-apiserver || true)
if [[ -z $apiserver && -x /usr/local/bin/kube-apiserver ]]; then
    apiserver=/usr/local/bin/kube-apiserver
fi
if [[ -n $apiserver && -x $apiserver ]]; then
    need=()
    command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
    command -v kubectl >/dev/null 2>&1 || need+=(kubernetes-client)
    command -v openssl >/dev/null 2>&1 || need+=(openssl)
    command -v curl >/dev/null 2>&1 || need+=(curl)
    if ((${#need[@]})); then
        apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
    echo "real-cluster tests run against $("$apiserver" --version) ($apiserver) and etcd $(etcd --version | awk 'NR==1 {print $3}')"
else
    echo "real-cluster tests skipped: no kube-apiserver binary (set UNSANDBOX_KUBE_APISERVER or put one on PATH; README, \"Real-cluster tests\")"
fi

step "cargo test (unit, mocked API server, end-to-end on LXD, real control plane)"
status=0
# One test at a time: the end-to-end tests share one LXD daemon.
cargo test --all-targets --locked --no-fail-fast "$@" -- --test-threads=1 || status=$?

step "language detection accuracy (held-out corpus of Debian sources)"
corpus_log=$(mktemp)
if tests/detection/corpus.sh --set eval >"$corpus_log" 2>&1; then
    tail -n 1 "$corpus_log"
    cargo run --quiet --locked -- detect-accuracy --corpus target/detection-corpus/eval \
        --min-accuracy 0.90 | tail -n 17 || status=1
else
    cat "$corpus_log"
    echo "could not build the detection corpus"
    status=1
fi
rm -f "$corpus_log"

step "fuzzing the API against its contract (schemathesis; tests/fuzz/run.sh)"
tests/fuzz/run.sh || status=1

step "leftovers"
left=0
for project in $(lxc project list -f csv | cut -d, -f1 | sed 's/ (current)$//' | grep -E '^ut-' || true); do
    left=1
    echo "test project $project was left behind with: $(lxc list --project "$project" -c n -f csv | tr '\n' ' ')"
    for c in $(lxc list --project "$project" -c n -f csv); do lxc delete --force --project "$project" "$c"; done
    lxc project delete "$project"
done
if [[ $left -eq 0 ]]; then
    echo "no test container or project left behind"
elif [[ $status -eq 0 ]]; then
    echo "tests passed but left containers behind (removed now)"
    status=1
fi
exit "$status"
