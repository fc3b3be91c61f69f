#!/bin/sh
# Benchmarks a vault: fetch against the loopback Vault stand-in over TLS:
# keyrun (release build) against curl making the same requests.
#
#   token:   the mount lookup and the KV v2 read with VAULT_TOKEN
#   approle: the AppRole login, the read and the token's revocation
#
# The server is the ignored test `serve_for_benchmark` in tests/vault.rs,
# built with --release so that its own TLS work does not hide the clients'
# cost, and killed on exit. Both sides wait for the same server, so its time
# still narrows the ratio. Needs hyperfine and curl.
# Usage: benches/vault.sh [extra hyperfine arguments]
set -eu

cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
work=$(mktemp -d)
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# Other worktrees may share the target folder, and cargo does not copy a
# fresh build of this one back to target/release, so force a build and copy
# the binary at once.
touch src/main.rs
cargo build --release --quiet
cp "$target/release/keyrun" "$work/keyrun"
cargo test --release --quiet --test vault --no-run
KEYRUN_BENCH_ENV="$work/server.env" \
    cargo test --release --quiet --test vault -- --ignored --exact serve_for_benchmark \
    >"$work/server.log" 2>&1 &
server_pid=$!
while [ ! -f "$work/server.env" ]; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        cat "$work/server.log" >&2
        exit 1
    fi
    sleep 0.1
done
. "$work/server.env"
export VAULT_ADDR VAULT_CACERT

keyrun="$work/keyrun"
reference='vault:secret/openai#api_key'

# curl reads the token from a header file so it stays out of argv.
printf 'X-Vault-Token: %s\n' "$VAULT_TOKEN" >"$work/token-header"
printf '{"role_id":"%s","secret_id":"%s"}' "$VAULT_ROLE_ID" "$VAULT_SECRET_ID" \
    >"$work/login.json"

cat >"$work/curl-token.sh" <<SCRIPT
curl -sSf --cacert "$VAULT_CACERT" -H @"$work/token-header" \
    -o /dev/null "$VAULT_ADDR/v1/sys/internal/ui/mounts/secret/openai" \
    -o /dev/null "$VAULT_ADDR/v1/secret/data/openai"
SCRIPT

cat >"$work/curl-approle.sh" <<SCRIPT
token=\$(curl -sSf --cacert "$VAULT_CACERT" --data @"$work/login.json" \
    "$VAULT_ADDR/v1/auth/approle/login" | sed 's/.*"client_token":"\([^"]*\)".*/\1/')
curl -sSf --cacert "$VAULT_CACERT" -H "X-Vault-Token: \$token" \
    -o /dev/null "$VAULT_ADDR/v1/secret/data/openai"
curl -sSf --cacert "$VAULT_CACERT" -H "X-Vault-Token: \$token" -X POST \
    -o /dev/null "$VAULT_ADDR/v1/auth/token/revoke-self"
SCRIPT

hyperfine -N --warmup 10 --min-runs 100 "$@" \
    -n 'curl: mount lookup + read (token)' "sh $work/curl-token.sh" \
    -n 'keyrun: mount lookup + read (token)' \
    "env VAULT_TOKEN=$VAULT_TOKEN $keyrun --from $reference -- true"

hyperfine -N --warmup 10 --min-runs 100 "$@" \
    -n 'curl: login + read + revoke (approle)' "sh $work/curl-approle.sh" \
    -n 'keyrun: login + read + revoke (approle)' \
    "env VAULT_ROLE_ID=$VAULT_ROLE_ID VAULT_SECRET_ID=$VAULT_SECRET_ID $keyrun --from vault:secret/openai?kv=2&auth=approle#api_key -- true"
