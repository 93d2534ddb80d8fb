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

# Prints the requests per second redis-benchmark reaches for one test (set, get or evalsha), given
# how its CONCURRENCY requests in flight are spread: "-c 50" (50 connections, one each) or
# "-c 1 -P 50" (one connection, 50 pipelined: the most Redis itself allows this work).
baseline() {
    local test=$1
    shift
    case $test in
        set | get) redis-benchmark -p "$port" "$@" -n "$REQUESTS" -t "$test" -q ;;
        evalsha) redis-benchmark -p "$port" "$@" -n "$REQUESTS" -q EVALSHA "$sha" 1 'key:__rand_int__' xxx ;;
    esac | tr '\r' '\n' | grep -Eo '[0-9.]+ requests per second' | tail -1 | cut -d' ' -f1
}

candidate() {
    "$BENCH" redis --url "$url" --requests "$REQUESTS" --concurrency "$CONCURRENCY" --tests "$1" |
        grep -Eo '[0-9.]+ requests per second' | cut -d' ' -f1
}

best() { sort -g | tail -1; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

echo
echo "Redis client: requests/s with $CONCURRENCY in flight (best of $ROUNDS), beside redis-benchmark"
printf '%-8s %16s %16s %16s %10s %10s\n' test "rb -c 50" "rb -c 1 -P 50" "RedisClient" "/ -c 50" "/ -P 50"
for test in set get evalsha; do
    connections=() pipelined=() client=()
    for ((round = 0; round < ROUNDS; round++)); do
        connections+=("$(baseline "$test" -c "$CONCURRENCY")")
        pipelined+=("$(baseline "$test" -c 1 -P "$CONCURRENCY")")
        client+=("$(candidate "$test")")
    done
    c=$(printf '%s\n' "${connections[@]}" | best)
    p=$(printf '%s\n' "${pipelined[@]}" | best)
    r=$(printf '%s\n' "${client[@]}" | best)
    printf '%-8s %16.0f %16.0f %16.0f %10s %10s\n' "$test" "$c" "$p" "$r" "$(ratio "$r" "$c")" "$(ratio "$r" "$p")"
done

# ---------------------------------------------------------------------------------------------------------------
# POST /channels/{id}/messages through a release relay (wrk, CONCURRENCY connections), beside send.lua driven
# directly by redis-benchmark on the same Redis (the ceiling Redis allows for the same atomic write).
echo
echo "==> release build of relay"
"$SWIFT" build ${swift_flags[@]+"${swift_flags[@]}"} -c release --product relay
RELAY=$("$SWIFT" build ${swift_flags[@]+"${swift_flags[@]}"} -c release --show-bin-path)/relay
relay_port=$(bash scripts/redis.sh free-port)
secret=bench-secret-$RANDOM$RANDOM
"$RELAY" serve --port "$relay_port" --redis "$url" --jwt-secret "$secret" >"$dir/relay.log" 2>&1 &
relay_pid=$!
trap 'kill "$relay_pid" 2>/dev/null || true; wait "$relay_pid" 2>/dev/null || true; cleanup' EXIT
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$relay_port/healthz" >/dev/null && break
    sleep 0.1
done
token=$("$RELAY" token bench-alice --jwt-secret "$secret")
channel=$(curl -fs -X POST "http://127.0.0.1:$relay_port/channels" -H "Authorization: Bearer $token" \
    -d '{"type":"group","members":["bench-bob"],"name":"bench"}' | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4)
send_sha=$(redis-cli -p "$port" SCRIPT LOAD "$(cat lua/send.lua)")
body='"type":"message","message_id":"m__rand_int__","sender_id":"bench-alice","text":"hello from the benchmark","client_msg_id":"__rand_int__"'

baseline_send() {
    redis-benchmark -p "$port" -c "$CONCURRENCY" -n "$REQUESTS" -r 999999999999 -q EVALSHA "$send_sha" 6 \
        "ch:{$channel}:meta" "ch:{$channel}:members" "ch:{$channel}:seq" "ch:{$channel}:log" "ch:{$channel}:msgs" \
        "ch:{$channel}:dedup:bench-alice:__rand_int__" bench-alice "m__rand_int__" "$body" "$channel" "ch:{$channel}:live" 86400 |
        tr '\r' '\n' | grep -Eo '[0-9.]+ requests per second' | tail -1 | cut -d' ' -f1
}

relay_send() {
    RELAY_TOKEN=$token RELAY_CHANNEL=$channel wrk -t 2 -c "$CONCURRENCY" -d "${BENCH_SECONDS:-10}s" --latency \
        -s scripts/wrk-send.lua "http://127.0.0.1:$relay_port" >"$dir/wrk.out"
    awk '/Requests\/sec/ { rate = $2 } /^ +50%/ { p50 = $2 } /^ +90%/ { p90 = $2 } /^ +99%/ { p99 = $2 }
        /Non-2xx/ { bad = $NF } END { printf "%s %s %s %s %s\n", rate, p50, p90, p99, (bad == "" ? 0 : bad) }' "$dir/wrk.out"
}

send_base=() send_relay=()
for ((round = 0; round < ROUNDS; round++)); do
    send_base+=("$(baseline_send)")
    send_relay+=("$(relay_send)")
done
base=$(printf '%s\n' "${send_base[@]}" | best)
read -r rate p50 p90 p99 bad <<<"$(printf '%s\n' "${send_relay[@]}" | sort -g -k1 | tail -1)"
echo
echo "Send path: messages/s with $CONCURRENCY in flight (best of $ROUNDS)"
printf '%-34s %14s %10s %10s %10s %8s\n' path "messages/s" p50 p90 p99 "non-2xx"
printf '%-34s %14.0f %10s %10s %10s %8s\n' "send.lua via redis-benchmark" "$base" - - - -
printf '%-34s %14.0f %10s %10s %10s %8s\n' "POST /channels/{id}/messages" "$rate" "$p50" "$p90" "$p99" "$bad"
echo "relay / redis-benchmark: $(ratio "$rate" "$base")"
