#!/usr/bin/env bash
# Benchmarks the aws-sm: source against one local moto_server: keyrun
# reading a secret versus `aws secretsmanager get-secret-value` (awscli
# from PyPI) and versus keyrun with the env source, plus how long keyrun
# takes to fail with no credentials. Prints hyperfine's table, the medians,
# the ratios and the peak RSS of each command. Needs hyperfine and GNU time
# (/usr/bin/time); everything talks to 127.0.0.1 only.
#
# Usage: benches/aws.sh [RUNS]   (default 50 runs per command)
#
# With KEYRUN_BASELINE set to a keyrun binary built without the aws-sm:
# source (for example from the main branch), the env source of that build
# runs too, which shows what linking the AWS SDK costs runs that do not
# use it.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-50}
target=${CARGO_TARGET_DIR:-target}
work=target/bench-aws
mkdir -p "$work"

# A copy, because a shared CARGO_TARGET_DIR may get another build's binary
# while the benchmark runs.
cargo build --release --quiet
cp "$target/release/keyrun" "$work/keyrun"
keyrun="$PWD/$work/keyrun"

# moto_server comes from the test venv, awscli from a venv of its own.
test_venv=target/test-venv
if [ ! -x "$test_venv/bin/moto_server" ]; then
    python3 -m venv "$test_venv"
    "$test_venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
fi
bench_venv=target/bench-venv
if [ ! -x "$bench_venv/bin/aws" ]; then
    python3 -m venv "$bench_venv"
    "$bench_venv/bin/python" -m pip install --quiet --disable-pip-version-check awscli
fi
aws="$PWD/$bench_venv/bin/aws"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$test_venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then
        break
    fi
    sleep 0.1
done

# Test credentials, a loopback endpoint and no instance metadata, for
# keyrun and the AWS CLI alike. HOME points at an empty folder so neither
# reads a real ~/.aws.
mkdir -p "$work/home"
export HOME="$PWD/$work/home"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
# keyrun reads AWS_REGION, awscli v1 AWS_DEFAULT_REGION.
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
export AWS_ENDPOINT_URL_SECRETS_MANAGER="http://127.0.0.1:$port"
export OPENAI_API_KEY="sk-bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"

secret=bench/openai
"$aws" secretsmanager create-secret --name "$secret" --secret-string "$OPENAI_API_KEY" >/dev/null

baseline=()
if [ -n "${KEYRUN_BASELINE:-}" ]; then
    baseline=(-n 'keyrun env (baseline build)' "$KEYRUN_BASELINE -- true")
fi
hyperfine --shell=none --warmup 5 --runs "$runs" --export-json "$work/hyperfine.json" \
    -n 'true (bare)' 'true' \
    -n 'env true (bare)' 'env true' \
    "${baseline[@]}" \
    -n 'keyrun env' "$keyrun -- true" \
    -n 'keyrun aws-sm' "$keyrun --from aws-sm:$secret -- true" \
    -n 'aws get-secret-value' "$aws secretsmanager get-secret-value --secret-id $secret --query SecretString --output text"

# With no credentials, no profile and metadata disabled, keyrun must fail
# before it sends a request.
hyperfine --shell=none --warmup 5 --runs "$runs" -i --export-json "$work/no-credentials.json" \
    -n 'keyrun aws-sm, no credentials' \
    "env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY $keyrun --from aws-sm:$secret -- true"

peak_rss() {
    /usr/bin/time -f '%M' -o "$work/rss" "$@" >/dev/null 2>&1 || true
    tail -1 "$work/rss"
}
rss_env=$(peak_rss "$keyrun" -- true)
rss_baseline=0
if [ -n "${KEYRUN_BASELINE:-}" ]; then
    rss_baseline=$(peak_rss "$KEYRUN_BASELINE" -- true)
fi
rss_aws=$(peak_rss "$keyrun" --from "aws-sm:$secret" -- true)
rss_cli=$(peak_rss "$aws" secretsmanager get-secret-value --secret-id "$secret")
rss_none=$(peak_rss env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY "$keyrun" --from "aws-sm:$secret" -- true)

python3 - "$work/hyperfine.json" "$work/no-credentials.json" "$rss_env" "$rss_aws" "$rss_cli" "$rss_none" "$rss_baseline" <<'EOF'
import json, sys

results = json.load(open(sys.argv[1]))["results"]
results += json.load(open(sys.argv[2]))["results"]
median = {r["command"]: r["median"] * 1000 for r in results}
rss = {
    "keyrun env": sys.argv[3],
    "keyrun aws-sm": sys.argv[4],
    "aws get-secret-value": sys.argv[5],
    "keyrun aws-sm, no credentials": sys.argv[6],
    "keyrun env (baseline build)": sys.argv[7],
}
print()
print("| command | median | peak RSS |")
print("| --- | --- | --- |")
for name, ms in median.items():
    memory = f"{int(rss[name]) / 1024:.1f} MB" if name in rss else "-"
    print(f"| {name} | {ms:.1f} ms | {memory} |")
print()
print(f"aws get-secret-value / keyrun aws-sm: {median['aws get-secret-value'] / median['keyrun aws-sm']:.1f}x")
print(f"keyrun aws-sm / keyrun env: {median['keyrun aws-sm'] / median['keyrun env']:.1f}x")
print(f"keyrun env / env true (bare): {median['keyrun env'] / median['env true (bare)']:.1f}x")
if "keyrun env (baseline build)" in median:
    print(f"keyrun env / keyrun env (baseline build): {median['keyrun env'] / median['keyrun env (baseline build)']:.2f}x")
EOF
