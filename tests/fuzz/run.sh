#!/usr/bin/env bash
# Fuzzes a running `unsandbox standalone` against the contract it serves
# (GET /openapi.json) with schemathesis, on the real LXD, on loopback only:
#   1. installs schemathesis, pinned (tests/fuzz/requirements.txt), in a
#      venv under the cargo target directory,
#   2. serves the small image with tests/fuzz/pool.yaml from a fresh LXD
#      project ut-fuzz-<random> on a free loopback port,
#   3. pass "open": no tokens file; every operation, every check;
#      pass "token": a tokens file and a valid bearer token on every
#      request (schemathesis also checks that the operations refuse the
#      request without it, or with a wrong one);
#      pass "no-token": the same server without the token: every operation
#      outside the open paths must answer 401, as the contract documents it,
#   4. fails on any 5xx, any status, content type, header or body the
#      contract does not allow, a server that died or did not stop cleanly,
#      and prints how many cases each pass tried,
#   5. removes the project and its containers, whatever happened.
# Bounded: at most FUZZ_EXAMPLES (25) cases per operation and phase, and
# FUZZ_SECONDS (90) per pass (fuzzing repeats until they are spent; the
# no-token pass takes a third of them).
# Checks: schemathesis' `all` but positive_data_acceptance: a body the
# schema allows may still be refused by this host (a language it does not
# serve, 404; a limit above the pool's maximum or below its floor, 422):
# the pools' configuration, not the contract, decides those. The no-token
# pass also leaves out the checks of undocumented methods and invalid data:
# the auth layer answers 401 before routing, so a caller without a token
# learns nothing about the routes.
# Usage: tests/fuzz/run.sh   (UNSANDBOX_BIN: a built binary to use;
#        FUZZ_SEED: schemathesis' seed, to replay a run)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

examples=${FUZZ_EXAMPLES:-25}
seconds=${FUZZ_SECONDS:-90}
target=${CARGO_TARGET_DIR:-target}
venv=$(realpath -m "$target/fuzz-venv")
open_paths=/healthz,/readyz,/metrics,/openapi.json

if [[ ! -x $venv/bin/schemathesis ]] || ! cmp -s tests/fuzz/requirements.txt "$venv/requirements.txt"; then
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        apt-get update -qq && apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
    fi
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/fuzz/requirements.txt
    cp tests/fuzz/requirements.txt "$venv/requirements.txt"
fi
echo "$("$venv/bin/schemathesis" --version)"

bin=${UNSANDBOX_BIN:-}
if [[ -z $bin ]]; then
    cargo build --quiet --locked --bin unsandbox
    bin=$target/debug/unsandbox
fi

project=ut-fuzz-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
work=$(mktemp -d)
server=
port=

cleanup() {
    if [[ -n $server ]] && kill -0 "$server" 2>/dev/null; then
        kill -TERM "$server"
        wait "$server" || true
    fi
    for c in $(lxc list --project "$project" -c n -f csv 2>/dev/null); do
        lxc delete --force --project "$project" "$c"
    done
    if lxc project show "$project" >/dev/null 2>&1; then
        lxc project delete "$project"
    fi
    rm -rf "$work"
}
trap cleanup EXIT

mkdir "$work/config"
cp manifests/samples/languageimage-small.yaml "$work/config/image.yaml"
cp tests/fuzz/pool.yaml "$work/config/pool.yaml"
token=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
echo "fuzz: $(printf %s "$token" | sha256sum | cut -d' ' -f1)" >"$work/tokens.yaml"

# Starts the server (extra arguments are the server's) and waits until it
# serves the pool.
start() {
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$bin" standalone --config "$work/config" --lxd-project "$project" --node-name fuzz \
        --storage-pool "${UNSANDBOX_STORAGE_POOL:-unsandbox}" --images-dir none \
        --listen "127.0.0.1:$port" --drain-delay-ms 100 --drain-grace-seconds 10 "$@" \
        >>"$work/server.log" 2>&1 &
    server=$!
    for _ in $(seq 360); do
        if curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; then
            return 0
        fi
        kill -0 "$server" 2>/dev/null || break
        sleep 0.5
    done
    echo "the server did not become ready:"
    tail -n 30 "$work/server.log"
    return 1
}

# Stops the server; fails unless it was still running and exits cleanly.
stop() {
    if ! kill -0 "$server" 2>/dev/null; then
        echo "the server died during the run:"
        tail -n 30 "$work/server.log"
        return 1
    fi
    kill -TERM "$server"
    local code=0
    wait "$server" || code=$?
    server=
    if ((code != 0)); then
        echo "the server exited with status $code:"
        tail -n 30 "$work/server.log"
        return 1
    fi
}

# One schemathesis run against the server: NAME, then schemathesis' own
# arguments; then the summary of its report.
fuzz() {
    local name=$1
    shift
    local began=$SECONDS code=0
    (cd "$work" && "$venv/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
        --url "http://127.0.0.1:$port" --workers 1 --request-timeout 60 \
        --max-examples "$examples" --generation-database none ${FUZZ_SEED:+--seed "$FUZZ_SEED"} \
        --report ndjson --report-ndjson-path "$work/$name.ndjson" --no-color "$@") \
        >"$work/$name.log" 2>&1 || code=$?
    grep -E 'Test cases:|Seed:' -A1 "$work/$name.log" | grep -v '^--$' | sed 's/^/  /' || true
    if ((code != 0)); then
        cat "$work/$name.log"
    fi
    local unauthenticated=()
    [[ $name == no-token ]] && unauthenticated=(--unauthenticated)
    "$venv/bin/python" tests/fuzz/summary.py "$work/$name.ndjson" --name "$name" \
        --open "$open_paths" "${unauthenticated[@]}" || code=1
    echo "  $((SECONDS - began)) s"
    return "$code"
}

status=0
all=(--checks all --exclude-checks positive_data_acceptance)
start
fuzz open "${all[@]}" --max-time "$seconds" || status=1
stop || status=1

start --tokens-file "$work/tokens.yaml" --cleanup-on-exit
fuzz token "${all[@]}" --max-time "$seconds" -H "Authorization: Bearer $token" || status=1
fuzz no-token --checks all \
    --exclude-checks positive_data_acceptance,negative_data_rejection,unsupported_method,allow_header_conformance \
    --max-time $((seconds / 3)) || status=1
stop || status=1

if grep -q 'panicked' "$work/server.log"; then
    echo "the server panicked:"
    grep -A5 'panicked' "$work/server.log"
    status=1
fi
if ((status == 0)); then
    echo "fuzz: no 5xx, no answer outside the contract, no crash"
fi
exit "$status"
