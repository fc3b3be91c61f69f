#!/usr/bin/env bash
# Measures what the audit log adds to a run: `true` bare, under keyrun
# without a log, and under keyrun appending to a log file (one variable,
# three records per run). Both keyrun commands start through `env`, so
# they pay the same extra exec. Usage: benches/audit.sh [PATH/TO/keyrun]
# (default: target/release/keyrun; build it with `cargo build --release`).
set -euo pipefail
cd "$(dirname "$0")/.."

keyrun=${1:-${CARGO_TARGET_DIR:-target}/release/keyrun}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

export OPENAI_API_KEY="sk-bench-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export KEYRUN_CONFIG=/dev/null

hyperfine -N --warmup 20 --runs 300 \
    --export-markdown "$work/audit.md" \
    --command-name 'true' 'true' \
    --command-name 'keyrun -- true' "env KEYRUN_AUDIT_LOG= $keyrun -- true" \
    --command-name 'keyrun -- true, audit log' \
    "env KEYRUN_AUDIT_LOG=$work/audit.log $keyrun -- true"
cat "$work/audit.md"
echo "log lines: $(wc -l < "$work/audit.log")"
