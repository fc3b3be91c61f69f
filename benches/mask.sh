#!/usr/bin/env bash
# Output masking throughput and latency.
#
# Throughput: a child writes 1 GiB of log-like text (a 64 MiB file, 16
# times) through keyrun with masking on, against the same child piped
# through `cat`. keyrun passes /dev/null through unmasked, so its stdout is
# a pipe to a final `cat` into /dev/null, and the baseline has the same
# final `cat`: each side is one filter between the child and that reader.
# Latency: a child writes a line
# every 10 ms, and a reader on keyrun's stdout measures how long each line
# took to arrive (CLOCK_MONOTONIC on both sides).
#
# Usage: benches/mask.sh  (builds the release binary; needs hyperfine and
# python3). Results go to target/bench/mask-*.json and stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/keyrun"
out=target/bench
mkdir -p "$out"

key="sk-test-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export OPENAI_API_KEY="$key"

log="$out/mask-log.txt"
if [ ! -s "$log" ]; then
    python3 - "$log" <<'PY'
import os, random, sys
random.seed(1)
paths = ["/v1/models", "/v1/chat/completions", "/v1/embeddings", "/healthz"]
lines = []
size = 0
while size < 64 * 1024 * 1024:
    request = os.urandom(16).hex()
    line = (
        f"2026-12-04T12:{random.randrange(60):02d}:{random.randrange(60):02d}."
        f"{random.randrange(1000):03d}Z INFO  request_id={request} "
        f"method=GET path={random.choice(paths)} status=200 "
        f"duration_ms={random.randrange(400)} user_agent=python-openai/1.30.1\n"
    )
    lines.append(line)
    size += len(line)
open(sys.argv[1], "w").write("".join(lines))
PY
fi
# One line in 10,000 carries the key, so replacements are part of the run.
child="i=0; while [ \$i -lt 16 ]; do cat $log; i=\$((i+1)); done; echo \"leak \$OPENAI_API_KEY\""

echo "# throughput: 1 GiB through keyrun --mask auto vs through cat"
hyperfine --warmup 1 --runs 5 --export-json "$out/mask-throughput.json" \
    -n cat "sh -c '$child' | cat | cat > /dev/null" \
    -n keyrun "$bin -- sh -c '$child' | cat > /dev/null"

python3 - "$out/mask-throughput.json" <<'PY'
import json, sys
results = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
gib = 1024 ** 3 * 1.0
for name in ("cat", "keyrun"):
    r = results[name]
    print(f"{name}: mean {r['mean']:.3f} s, {gib / r['mean'] / 1e9:.2f} GB/s")
print(f"keyrun / cat throughput: {results['cat']['mean'] / results['keyrun']['mean']:.2f}")
PY

echo "# latency: time from the child's write to the line on keyrun's stdout"
python3 - "$bin" <<'PY'
import statistics, subprocess, sys, time
writer = (
    "import time, sys\n"
    "for _ in range(200):\n"
    "    sys.stdout.write(f'{time.monotonic_ns()} line\\n'); sys.stdout.flush()\n"
    "    time.sleep(0.01)\n"
)
proc = subprocess.Popen([sys.argv[1], "--", sys.executable, "-c", writer],
                        stdout=subprocess.PIPE)
delays = []
for line in proc.stdout:
    arrived = time.monotonic_ns()
    delays.append((arrived - int(line.split()[0])) / 1e6)
proc.wait()
delays.sort()
print(f"lines: {len(delays)}, median {statistics.median(delays):.3f} ms, "
      f"p99 {delays[int(len(delays) * 0.99) - 1]:.3f} ms, max {delays[-1]:.3f} ms")
PY
