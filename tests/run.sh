#!/usr/bin/env bash
# Runs keyrun's test suite: installs the pinned Python packages the tests
# use (the official openai client, moto_server) into target/test-venv, then
# runs cargo test. Tests talk to loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/test-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt

export KEYRUN_TEST_PYTHON="$PWD/$venv/bin/python"
export KEYRUN_TEST_MOTO="$PWD/$venv/bin/moto_server"
export AWS_EC2_METADATA_DISABLED=true
cargo test --all-targets "$@"
