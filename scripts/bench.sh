#!/usr/bin/env bash
# `make bench`: benchmarks on a private redis-server (free loopback port, no persistence), each beside a
# baseline measured in the same run, reported as ratios. The machine is shared and noisy, so every figure
# is the best of ROUNDS alternating runs of the baseline and the candidate.
#
#   BENCH_REQUESTS  requests per test (default 200000)
#   BENCH_ROUNDS    alternating rounds (default 3)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SWIFT=${SWIFT:-swift}
read -r -a swift_flags <<<"${SWIFT_FLAGS:-}"
REQUESTS=${BENCH_REQUESTS:-200000}
ROUNDS=${BENCH_ROUNDS:-3}
CONCURRENCY=50

echo "==> release build of relay-bench"
"$SWIFT" build ${swift_flags[@]+"${swift_flags[@]}"} -c release --product relay-bench
BENCH=$("$SWIFT" build ${swift_flags[@]+"${swift_flags[@]}"} -c release --show-bin-path)/relay-bench

dir=$(mktemp -d "${TMPDIR:-/tmp}/relay-bench-redis.XXXXXX")
cleanup() {
    bash scripts/redis.sh stop "$dir" >/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
port=$(bash scripts/redis.sh free-port)
bash scripts/redis.sh start "$dir" "$port" test >/dev/null
url=redis://127.0.0.1:$port
echo "Redis $(redis-server --version | grep -o 'v=[^ ]*') on $url; $(nproc) cores; $REQUESTS requests, $CONCURRENCY in flight"

# The same script relay-bench runs; redis-benchmark calls it by its SHA-1.
script="return redis.call('SET', KEYS[1], ARGV[1])"
sha=$(redis-cli -p "$port" SCRIPT LOAD "$script")

# Prints the requests per second redis-benchmark reaches for one test (set, get or evalsha).
baseline() {
    case $1 in
        set | get) redis-benchmark -p "$port" -c "$CONCURRENCY" -n "$REQUESTS" -t "$1" -q ;;
        evalsha) redis-benchmark -p "$port" -c "$CONCURRENCY" -n "$REQUESTS" -q EVALSHA "$sha" 1 'key:__rand_int__' xxx ;;
    esac | tr '\r' '\n' | grep -Eo '[0-9.]+ requests per second' | tail -1 | cut -d' ' -f1
}

candidate() {
    "$BENCH" redis --url "$url" --requests "$REQUESTS" --concurrency "$CONCURRENCY" --tests "$1" |
        grep -Eo '[0-9.]+ requests per second' | cut -d' ' -f1
}

best() { sort -g | tail -1; }

printf '\n%-10s %22s %22s %8s\n' test "redis-benchmark req/s" "RedisClient req/s" ratio
for test in set get evalsha; do
    base_runs=() client_runs=()
    for ((round = 0; round < ROUNDS; round++)); do
        base_runs+=("$(baseline "$test")")
        client_runs+=("$(candidate "$test")")
    done
    base=$(printf '%s\n' "${base_runs[@]}" | best)
    client=$(printf '%s\n' "${client_runs[@]}" | best)
    ratio=$(awk -v a="$client" -v b="$base" 'BEGIN { printf "%.2f", a / b }')
    printf '%-10s %22.0f %22.0f %8s\n' "$test" "$base" "$client" "$ratio"
done
