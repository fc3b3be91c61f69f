#!/usr/bin/env bash
# Benchmarks the core on the env: source: the start-up cost of
# `keyrun -- true` against `env OPENAI_API_KEY=... true` and bare `true`
# (hyperfine medians and their ratios; `timeout 60 true` shows what any
# wrapper that forks and waits costs), the release binary's size, keyrun's
# peak RSS, and whether that run opens a socket or starts a thread (strace).
# Targets: at most 2x env's median, peak RSS under 10 MB, no socket, no
# thread. Linux only (GNU time, strace); not part of .ci/run.
#
# Usage: benches/core.sh [RUNS]   (default 1000 runs per command)
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-1000}
for tool in hyperfine strace jq /usr/bin/time; do
    if ! command -v "$tool" >/dev/null; then
        echo "benches/core.sh: $tool is missing; install it (apt-get install hyperfine strace jq time)" >&2
        exit 1
    fi
done

cargo build --release --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A copy, so a concurrent build into the same target folder cannot change
# the binary between the measurements.
cp "${CARGO_TARGET_DIR:-target}/release/keyrun" "$work/keyrun"
keyrun=$work/keyrun

# A random value in OpenAI's shape; the commands carry it, so hyperfine
# shows them by name only.
key="sk-bench-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export OPENAI_API_KEY=$key

# The machine's speed drifts over a run (other guests on the host, CPU
# frequency), so the runs are spread over ROUNDS rounds that each time all
# four commands, and the medians come from all rounds together.
rounds=10
per_round=$(( (runs + rounds - 1) / rounds ))
for round in $(seq "$rounds"); do
    hyperfine --shell=none --warmup 10 --runs "$per_round" --style none \
        --export-json "$work/round-$round.json" \
        --command-name 'keyrun -- true' "$keyrun -- true" \
        --command-name 'env OPENAI_API_KEY=... true' "env OPENAI_API_KEY=$key true" \
        --command-name 'timeout 60 true' "timeout 60 true" \
        --command-name 'true' "true" >&2
    # The same with stdout a pipe, as in a CI log: keyrun then masks it.
    hyperfine --shell=none --warmup 10 --runs "$per_round" --style none --output=pipe \
        --export-json "$work/pipe-$round.json" \
        --command-name 'keyrun -- true | (pipe)' "$keyrun -- true" \
        --command-name 'env OPENAI_API_KEY=... true | (pipe)' "env OPENAI_API_KEY=$key true" >&2
done
python3 - "$work" "$rounds" >"$work/times.json" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
merged = {}
for round in range(1, rounds + 1):
    results = json.load(open(f"{work}/round-{round}.json"))["results"]
    results += json.load(open(f"{work}/pipe-{round}.json"))["results"]
    for result in results:
        entry = merged.setdefault(result["command"], {"times": [], "user": [], "system": []})
        entry["times"] += result["times"]
        entry["user"] += result["user"] if isinstance(result["user"], list) else [result["user"]]
        entry["system"] += result["system"] if isinstance(result["system"], list) else [result["system"]]
results = [
    {"command": name, "median": statistics.median(e["times"]),
     "user": statistics.mean(e["user"]), "system": statistics.mean(e["system"])}
    for name, e in merged.items()
]
json.dump({"results": results}, sys.stdout)
PY

median() {
    jq --arg name "$1" '.results[] | select(.command == $name) | .median' "$work/times.json"
}
# User plus system CPU time, which other load on the machine disturbs less
# than wall-clock time.
cpu() {
    jq --arg name "$1" '.results[] | select(.command == $name) | .user + .system' "$work/times.json"
}
keyrun_median=$(median 'keyrun -- true')
env_median=$(median 'env OPENAI_API_KEY=... true')
true_median=$(median 'true')
timeout_median=$(median 'timeout 60 true')
keyrun_pipe_median=$(median 'keyrun -- true | (pipe)')
env_pipe_median=$(median 'env OPENAI_API_KEY=... true | (pipe)')
keyrun_cpu=$(cpu 'keyrun -- true')
env_cpu=$(cpu 'env OPENAI_API_KEY=... true')
load=$(cut -d' ' -f1 /proc/loadavg)

/usr/bin/time -v "$keyrun" -- true 2>"$work/time.txt"
peak_kib=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")

strace -f -qq -e trace=network,clone,clone3 -o "$work/strace.txt" "$keyrun" -- true
# socket( and connect( only: the socketpair( that std's spawn opens carries
# an exec error back from the child and reaches no network.
sockets=$(grep -c -E '[0-9] +(socket|connect)\(' "$work/strace.txt" || true)
threads=$(grep -c 'CLONE_THREAD' "$work/strace.txt" || true)
processes=$(grep -c -E '^[0-9]+ +clone3?\(' "$work/strace.txt" || true)

awk -v k="$keyrun_median" -v e="$env_median" -v t="$true_median" \
    -v w="$timeout_median" -v kp="$keyrun_pipe_median" -v ep="$env_pipe_median" -v kc="$keyrun_cpu" -v ec="$env_cpu" -v load="$load" \
    -v size="$(stat -c %s "$keyrun")" -v rss="$peak_kib" \
    -v sockets="$sockets" -v threads="$threads" -v processes="$processes" 'BEGIN {
    printf "| measure | value |\n| --- | --- |\n"
    printf "| `keyrun -- true` median | %.2f ms |\n", k * 1000
    printf "| `env OPENAI_API_KEY=... true` median | %.2f ms |\n", e * 1000
    printf "| `timeout 60 true` median (forks and waits, as keyrun does) | %.2f ms |\n", w * 1000
    printf "| `true` median | %.2f ms |\n", t * 1000
    printf "| keyrun / env | %.2fx (target: at most 2x) |\n", k / e
    printf "| keyrun / timeout | %.2fx |\n", k / w
    printf "| keyrun / true | %.2fx |\n", k / t
    printf "| keyrun - env | %.2f ms |\n", (k - e) * 1000
    printf "| stdout a pipe (keyrun masks it): keyrun / env | %.2f ms / %.2f ms = %.2fx |\n", kp * 1000, ep * 1000, kp / ep
    printf "| CPU time (user + system, mean): keyrun / env | %.2f ms / %.2f ms = %.2fx |\n", kc * 1000, ec * 1000, kc / ec
    printf "| load average at the end | %s |\n", load
    printf "| release binary size | %.1f MiB (%d bytes) |\n", size / 1048576, size
    printf "| peak RSS of `keyrun -- true` | %.1f MiB (target: under 10 MB) |\n", rss / 1024
    printf "| sockets opened (strace) | %d |\n", sockets
    printf "| threads started (strace) | %d |\n", threads
    printf "| processes started (strace) | %d (the child) |\n", processes
}'
