#!/usr/bin/env bash
# `make bench`: benchmarks on a private redis-server (free loopback port, no persistence), each beside a
# baseline or a peer measured in the same run, reported as ratios. See docs/BENCHMARKS.md.
#
#   1. Redis client (relay-bench redis) beside redis-benchmark.
#   2. Send path: POST /channels/{id}/messages (wrk) and relay-bench send (WebSocket and REST) beside
#      send.lua driven by redis-benchmark (the ceiling Redis allows for the same atomic write).
#   3. Scenarios (relay-bench fanout, dms, resume, idle) against a release relay and, where nchan supports
#      them (fanout, dms, idle), against nchan (nginx + libnginx-mod-nchan, Redis storage) on the same Redis.
#   4. Cluster: relay-bench send (WebSocket) through a relay on a private Redis Cluster (3 primaries +
#      3 replicas) beside a relay on the single Redis, in alternating rounds; fan-out on the cluster.
#
# Knobs (environment):
#   BENCH_PARTS           which parts to run: any of "redis send scenarios cluster" (default all four)
#   BENCH_REQUESTS        requests per Redis client test (default 200000)
#   BENCH_ROUNDS          alternating rounds of the Redis client and send-path tests (default 3)
#   BENCH_SECONDS         seconds of each wrk / relay-bench send run (default 10)
#   BENCH_FANOUT          fan-out socket counts (default "1000 10000")
#   BENCH_FANOUT_RATE     fan-out messages/s (default 10)
#   BENCH_FANOUT_SECONDS  seconds of fan-out publishing (default 10 at 1,000 sockets; 5 above)
#   BENCH_FANOUT_MAX      sockets of the ack-paced fan-out (4 messages in flight: the most each server delivers;
#                         default 1000, empty to skip)
#   BENCH_DMS             DM channels (default 2500); BENCH_DM_RATE messages/s in total (default 2500)
#   BENCH_IDLE            idle sockets (default 10000; the open-file limit here is 20,000 per process)
#   BENCH_HEARTBEAT       heartbeat / ping interval for the idle scenario, seconds (default 5)
#   BENCH_SCENARIO_ROUNDS rounds of the fan-out, DM and idle scenarios, relay and nchan alternating in each
#                         (default 1); the table gives each figure's median over the rounds
#   BENCH_RESUME          resume clients (default 1000), each 1,000 events behind
#   BENCH_FLOOD_FRAMES    60 KB frames the flooding client sends without reading (default 3000)
#   BENCH_THREADS         event loops of relay-bench (default 1)
#   BENCH_NCHAN           0 to skip the nchan peer (default 1)
#   SWIFT_FLAGS           e.g. --scratch-path=.build-bench to keep release builds apart
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SWIFT=${SWIFT:-swift}
read -r -a swift_flags <<<"${SWIFT_FLAGS:-}"
PARTS=${BENCH_PARTS:-redis send scenarios cluster}
REQUESTS=${BENCH_REQUESTS:-200000}
ROUNDS=${BENCH_ROUNDS:-3}
SECONDS_PER_RUN=${BENCH_SECONDS:-10}
FANOUT=${BENCH_FANOUT:-1000 10000}
FANOUT_RATE=${BENCH_FANOUT_RATE:-10}
FANOUT_MAX=${BENCH_FANOUT_MAX-1000}
DMS=${BENCH_DMS:-2500}
DM_RATE=${BENCH_DM_RATE:-2500}
SCENARIO_ROUNDS=${BENCH_SCENARIO_ROUNDS:-1}
IDLE=${BENCH_IDLE:-10000}
HEARTBEAT=${BENCH_HEARTBEAT:-5}
RESUME=${BENCH_RESUME:-1000}
THREADS=${BENCH_THREADS:-1}
NCHAN=${BENCH_NCHAN:-1}
CONCURRENCY=50
# Every relay-bench scenario ends by itself; this is the bound if something hangs.
SCENARIO_TIMEOUT=300

wants() { [[ " $PARTS " == *" $1 "* ]]; }

packages=(redis-server wrk jq)
[ "$NCHAN" = 1 ] && packages+=(nginx libnginx-mod-nchan)
bash scripts/deps.sh "${packages[@]}"
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

echo "==> release build of relay-bench and relay"
"$SWIFT" build ${swift_flags[@]+"${swift_flags[@]}"} -c release --product relay-bench
"$SWIFT" build ${swift_flags[@]+"${swift_flags[@]}"} -c release --product relay
bin=$("$SWIFT" build ${swift_flags[@]+"${swift_flags[@]}"} -c release --show-bin-path)
BENCH=$bin/relay-bench
RELAY=$bin/relay

dir=$(mktemp -d "${TMPDIR:-/tmp}/relay-bench.XXXXXX")
relay_pid=
child=
cleanup() {
    trap - EXIT INT TERM
    if [ -n "$child" ]; then
        kill "$child" 2>/dev/null || true
        wait "$child" 2>/dev/null || true
    fi
    stop_relay
    bash scripts/nchan.sh stop "$dir/nchan" >/dev/null 2>&1 || true
    bash scripts/redis.sh stop "$dir/redis" >/dev/null 2>&1 || true
    bash scripts/redis.sh stop "$dir/cluster" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs COMMAND under `timeout SECONDS`, in the background, and waits for it: an interrupt then stops the
# script at once (the trap kills the command) instead of after the command ends.
run() {
    local limit=$1 rc=0
    shift
    timeout "$limit" "$@" &
    child=$!
    wait "$child" || rc=$?
    child=
    return "$rc"
}

stop_relay() {
    [ -n "$relay_pid" ] || return 0
    kill "$relay_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$relay_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$relay_pid" 2>/dev/null || true
    wait "$relay_pid" 2>/dev/null || true
    relay_pid=
}

# Starts a release relay on a free port (any previous one stopped first); sets relay_port and relay_pid.
start_relay() {
    stop_relay
    relay_port=$(bash scripts/redis.sh free-port)
    "$RELAY" serve --port "$relay_port" --redis "${relay_redis:-$url}" --jwt-secret "$secret" "$@" >>"$dir/relay.log" 2>&1 &
    relay_pid=$!
    for _ in $(seq 1 100); do
        curl -fs "http://127.0.0.1:$relay_port/healthz" >/dev/null && return 0
        kill -0 "$relay_pid" 2>/dev/null || break
        sleep 0.1
    done
    tail -n 20 "$dir/relay.log" >&2
    echo "error: the relay did not start" >&2
    exit 1
}

# Starts nchan on a free port with WebSocket pings every $1 seconds; sets nchan_port.
start_nchan() {
    bash scripts/nchan.sh stop "$dir/nchan" >/dev/null 2>&1 || true
    nchan_port=$(bash scripts/redis.sh free-port)
    bash scripts/nchan.sh start "$dir/nchan" "$nchan_port" "$port" "$1"
}

port=$(bash scripts/redis.sh free-port)
bash scripts/redis.sh start "$dir/redis" "$port" test >/dev/null
url=redis://127.0.0.1:$port
redis_pid=$(<"$dir/redis/redis.pid")
secret=bench-secret-$(od -An -N24 -tx1 /dev/urandom | tr -d " \n")   # 32 bytes at least: relay serve refuses less
echo "Redis $(redis-server --version | grep -o 'v=[^ ]*') on $url; $(nproc) cores"

best() { sort -g | tail -1; }
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { n = "^[0-9.eE+-]+$"; if (a !~ n || b !~ n || b + 0 == 0) print "-"; else printf "%.2f", a / b }'
}

# ---------------------------------------------------------------------------------------------------------------
if wants redis; then
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

    # relay-bench redis for one test; the rate lands in $dir/candidate.out.
    candidate() {
        run "$SCENARIO_TIMEOUT" "$BENCH" redis --url "$url" --requests "$REQUESTS" --concurrency "$CONCURRENCY" --tests "$1" \
            >"$dir/candidate.out"
    }

    echo
    echo "Redis client: requests/s with $CONCURRENCY in flight (best of $ROUNDS), beside redis-benchmark"
    printf '%-8s %16s %16s %16s %10s %10s\n' test "rb -c 50" "rb -c 1 -P 50" "RedisClient" "/ -c 50" "/ -P 50"
    for test in set get evalsha; do
        connections=() pipelined=() client=()
        for ((round = 0; round < ROUNDS; round++)); do
            connections+=("$(baseline "$test" -c "$CONCURRENCY")")
            pipelined+=("$(baseline "$test" -c 1 -P "$CONCURRENCY")")
            candidate "$test"
            client+=("$(grep -Eo '[0-9.]+ requests per second' "$dir/candidate.out" | cut -d' ' -f1)")
        done
        c=$(printf '%s\n' "${connections[@]}" | best)
        p=$(printf '%s\n' "${pipelined[@]}" | best)
        r=$(printf '%s\n' "${client[@]}" | best)
        printf '%-8s %16.0f %16.0f %16.0f %10s %10s\n' "$test" "$c" "$p" "$r" "$(ratio "$r" "$c")" "$(ratio "$r" "$p")"
    done
fi

# ---------------------------------------------------------------------------------------------------------------
# POST /channels/{id}/messages through a release relay (wrk, CONCURRENCY connections), and relay-bench send over
# WebSocket and REST, beside send.lua driven directly by redis-benchmark on the same Redis (the ceiling Redis
# allows for the same atomic write).
if wants send; then
    start_relay
    token=$("$RELAY" token bench-alice --jwt-secret "$secret")
    channel=$(curl -fs -X POST "http://127.0.0.1:$relay_port/channels" -H "Authorization: Bearer $token" \
        -d '{"type":"group","members":["bench-bob"],"name":"bench"}' | grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4)
    # As the relay runs it: behind lua/prelude.lua (the shared append).
    send_sha=$(redis-cli -p "$port" SCRIPT LOAD "$(cat lua/prelude.lua lua/send.lua)")
    body='"type":"message","message_id":"m__rand_int__","sender_id":"bench-alice","text":"hello from the benchmark","client_msg_id":"__rand_int__"'

    # Each call must append a new message, as each of the relay's does. redis-benchmark reads -r with atoi: a
    # keyspace past 2^31 wraps, reads as 0, and makes every __rand_int__ 000000000000 (every call after the
    # first a duplicate). So -r stays below 2^31, and the dedup entry and message id take two random numbers
    # each (24 digits: no collision in any run). The seq counter tells how many calls appended; fewer than
    # 99.9 % fails the run rather than report the duplicate path as the ceiling.
    baseline_send() {
        local before after rate
        before=$(redis-cli -p "$port" GET "ch:{$channel}:seq")
        rate=$(redis-benchmark -p "$port" -c "$CONCURRENCY" -n "$REQUESTS" -r 2000000000 -q EVALSHA "$send_sha" 7 \
            "ch:{$channel}:meta" "ch:{$channel}:members" "ch:{$channel}:seq" "ch:{$channel}:log" "ch:{$channel}:msgs" \
            "ch:{$channel}:dedup" "ch:{$channel}:dedupx" bench-alice "m__rand_int____rand_int__" "$body" \
            "$channel" "ch:{$channel}:live" "bench-alice:__rand_int____rand_int__" 86400 |
            tr '\r' '\n' | grep -Eo '[0-9.]+ requests per second' | tail -1 | cut -d' ' -f1)
        after=$(redis-cli -p "$port" GET "ch:{$channel}:seq")
        if [ -z "$rate" ] || (((${after:-0} - ${before:-0}) * 1000 < REQUESTS * 999)); then
            echo "error: send.lua via redis-benchmark appended $((${after:-0} - ${before:-0})) of $REQUESTS messages" >&2
            exit 1
        fi
        echo "$rate"
    }

    # wrk on the relay; its figures land in $dir/wrk.out.
    relay_send() {
        RELAY_TOKEN=$token RELAY_CHANNEL=$channel run "$SCENARIO_TIMEOUT" wrk -t 2 -c "$CONCURRENCY" -d "${SECONDS_PER_RUN}s" \
            --latency -s scripts/wrk-send.lua "http://127.0.0.1:$relay_port" >"$dir/wrk.out"
    }
    wrk_figures() {
        awk '/Requests\/sec/ { rate = $2 } /^ +50%/ { p50 = $2 } /^ +90%/ { p90 = $2 } /^ +99%/ { p99 = $2 }
            /Non-2xx/ { bad = $NF } END { printf "%s %s %s %s %s\n", rate, p50, p90, p99, (bad == "" ? 0 : bad) }' "$dir/wrk.out"
    }

    # relay-bench send over one path (ws or rest); its JSON line lands in $dir/send.json.
    bench_send() {
        run "$SCENARIO_TIMEOUT" "$BENCH" send --url "http://127.0.0.1:$relay_port" --jwt-secret "$secret" --paths "$1" \
            --connections "$CONCURRENCY" --seconds "$SECONDS_PER_RUN" --threads "$THREADS" \
            --server-pids "$relay_pid" --redis-pid "$redis_pid" --json >"$dir/send.out" || true
        grep '^json ' "$dir/send.out" | cut -c6- >"$dir/send.json" || true
    }
    send_figures() {
        jq -r '[.messages_per_s, .ack_p50_ms, .ack_p90_ms, .ack_p99_ms, .ack_max_ms, .errors, .server_redis_us_per_message] | @tsv' \
            "$dir/send.json"
    }

    send_base=() send_relay=() send_ws=() send_rest=()
    for ((round = 0; round < ROUNDS; round++)); do
        send_base+=("$(baseline_send)")
        relay_send
        send_relay+=("$(wrk_figures)")
        bench_send ws
        send_ws+=("$(send_figures)")
        bench_send rest
        send_rest+=("$(send_figures)")
    done
    base=$(printf '%s\n' "${send_base[@]}" | best)
    read -r rate p50 p90 p99 bad <<<"$(printf '%s\n' "${send_relay[@]}" | sort -g -k1 | tail -1)"
    echo
    echo "Send path: messages/s with $CONCURRENCY in flight (best of $ROUNDS)"
    printf '%-34s %12s %9s %9s %9s %9s %7s %12s %8s\n' path "messages/s" p50 p90 p99 max errors "µs CPU/msg" "/ ceiling"
    printf '%-34s %12.0f %9s %9s %9s %9s %7s %12s %8s\n' "send.lua via redis-benchmark" "$base" - - - - - - 1.00
    printf '%-34s %12.0f %9s %9s %9s %9s %7s %12s %8s\n' "POST /channels/{id}/messages (wrk)" "$rate" "$p50" "$p90" "$p99" - "$bad" - \
        "$(ratio "$rate" "$base")"
    for path in ws rest; do
        if [ "$path" = ws ]; then rows=("${send_ws[@]}"); label="WebSocket send (relay-bench)"; else rows=("${send_rest[@]}"); label="REST POST (relay-bench)"; fi
        IFS=$'\t' read -r r a b c m e cpu <<<"$(printf '%s\n' "${rows[@]}" | sort -g -k1 | tail -1)"
        printf '%-34s %12.0f %8.2fms %8.2fms %8.2fms %8.2fms %7.0f %12.1f %8s\n' "$label" "$r" "$a" "$b" "$c" "$m" "$e" "$cpu" "$(ratio "$r" "$base")"
    done
    echo "(µs CPU/msg: relay + Redis CPU per acknowledged message; / ceiling: messages/s over send.lua's)"
fi

# ---------------------------------------------------------------------------------------------------------------
if wants scenarios; then
    results=$dir/results.jsonl
    : >"$results"

    # settle PIDS...: waits (30 s at most) until the servers and Redis take under 20 ms of CPU in a second, so
    # that no work left from the last scenario (sockets closing, keys expiring) is counted in the next.
    settle() {
        local before after
        ticks() { local p t=0; for p in "$@"; do [ -n "$p" ] || continue; t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$t"; }
        for _ in $(seq 1 30); do
            before=$(ticks "$@")
            sleep 1
            after=$(ticks "$@")
            [ $((after - before)) -lt 2 ] && return 0
        done
        echo "(servers still busy after 30 s)"
    }

    # scenario TARGET ARGS...: one relay-bench scenario against the relay or nchan; prints its block and keeps
    # its JSON line.
    scenario() {
        local target=$1 name=$2
        shift 2
        local pids=$relay_pid target_url=http://127.0.0.1:$relay_port
        if [ "$target" = nchan ]; then
            pids=$(bash scripts/nchan.sh pids "$dir/nchan")
            target_url=http://127.0.0.1:$nchan_port
        fi
        # shellcheck disable=SC2046 # one pid per word
        settle "$relay_pid" "$redis_pid" $([ "$NCHAN" = 1 ] && bash scripts/nchan.sh pids "$dir/nchan" 2>/dev/null | tr , ' ')
        echo
        if ! run "$SCENARIO_TIMEOUT" "$BENCH" "$name" --target "$target" --url "$target_url" --jwt-secret "$secret" \
            --redis "$url" --server-pids "$pids" --redis-pid "$redis_pid" --threads "$THREADS" --json "$@" >"$dir/last.out" 2>&1; then
            echo "!! $name against $target failed:"
        fi
        grep -v '^json ' "$dir/last.out" || true
        grep '^json ' "$dir/last.out" | cut -c6- | jq -c --arg name "$name $*" '. + {"label": $name}' >>"$results" || true
    }

    start_relay
    [ "$NCHAN" = 1 ] && start_nchan 30
    for round in $(seq 1 "$SCENARIO_ROUNDS"); do
        if [ "$SCENARIO_ROUNDS" != 1 ]; then
            echo
            echo "== scenarios, round $round of $SCENARIO_ROUNDS"
        fi
        for sockets in $FANOUT; do
            seconds=${BENCH_FANOUT_SECONDS:-$([ "$sockets" -le 1000 ] && echo 10 || echo 5)}
            args=(--sockets "$sockets" --rate "$FANOUT_RATE" --seconds "$seconds" --drain 60)
            scenario relay fanout "${args[@]}"
            [ "$NCHAN" = 1 ] && scenario nchan fanout "${args[@]}"
        done
        if [ -n "$FANOUT_MAX" ]; then
            args=(--sockets "$FANOUT_MAX" --rate 0 --window 4 --seconds 5 --drain 60)
            scenario relay fanout "${args[@]}"
            [ "$NCHAN" = 1 ] && scenario nchan fanout "${args[@]}"
        fi
        args=(--channels "$DMS" --rate "$DM_RATE" --seconds "$SECONDS_PER_RUN" --drain 60)
        scenario relay dms "${args[@]}"
        [ "$NCHAN" = 1 ] && scenario nchan dms "${args[@]}"
    done
    scenario relay resume --clients "$RESUME" --behind 1000

    # Flood: one client sends 3,000 frames of 60 KB (each answered with an error) and reads nothing; the
    # relay's RSS before and after tells what one such client costs it (fresh relay, so the rest is quiet).
    start_relay
    rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$relay_pid/status"; }
    flood_before=$(rss_kib)
    flood=$(run "$SCENARIO_TIMEOUT" python3 scripts/ws-flood.py "$relay_port" "$("$RELAY" token bench-flood --jwt-secret "$secret")" \
        "${BENCH_FLOOD_FRAMES:-3000}" 60000 || echo '{}')
    flood_after=$(rss_kib)
    echo
    echo "flood: $flood; relay RSS $flood_before KiB before, $flood_after KiB after"
    jq -c --argjson before "$flood_before" --argjson after "$flood_after" \
        '. + {"scenario": "flood", "target": "relay", "label": "flood", "rss_growth_mib": (($after - $before) / 1024)}' \
        <<<"$flood" >>"$results" || true

    # Idle: fresh servers, so that the RSS they gain is the connections' alone, with a short heartbeat.
    for _ in $(seq 1 "$SCENARIO_ROUNDS"); do
        start_relay --heartbeat "$HEARTBEAT"
        scenario relay idle --sockets "$IDLE" --heartbeat "$HEARTBEAT"
        stop_relay
        if [ "$NCHAN" = 1 ]; then
            start_nchan "$HEARTBEAT"
            scenario nchan idle --sockets "$IDLE" --heartbeat "$HEARTBEAT"
        fi
    done

    # The table: one row per figure, relay beside nchan, and their ratio (relay / nchan). Over several rounds,
    # a number is the median of the rounds' (the lower middle one of an even count), and a text (the delivery
    # counts) is each distinct value, so that no round's nonzero count is hidden.
    figure() { # SCENARIO TARGET LABEL-PREFIX EXPRESSION
        jq -r --arg s "$1" --arg t "$2" --arg l "$3" \
            "select(.scenario == \$s and .target == \$t and (.label | startswith(\$l))) | ($4) // empty" "$results"
    }
    median() { # the median of the numbers on stdin, or the distinct texts joined
        local values
        values=$(cat)
        [ -n "$values" ] || return 0
        if grep -qvE '^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$' <<<"$values"; then
            awk '!seen[$0]++' <<<"$values" | paste -sd ';' | sed 's/;/; /g'
        else
            sort -g <<<"$values" | awk '{ v[NR] = $0 } END { print v[int((NR + 1) / 2)] }'
        fi
    }
    row() { # TITLE SCENARIO LABEL-PREFIX EXPRESSION DECIMALS
        local relay nchan
        relay=$(figure "$2" relay "$3" "$4" | median)
        nchan=$(figure "$2" nchan "$3" "$4" | median)
        local r=-
        [ "$5" = text ] || r=$(ratio "$relay" "$nchan")
        printf '%-56s %14s %14s %8s\n' "$1" "$(fmt "$relay" "$5")" "$(fmt "$nchan" "$5")" "$r"
    }
    fmt() {
        if [ -z "$1" ] || [ "$1" = null ]; then
            echo -
        elif [ "$2" = text ]; then
            echo "$1"
        else
            printf "%.${2}f" "$1"
        fi
    }

    echo
    echo "Scenarios (relay-bench, $THREADS event loop(s), $SCENARIO_ROUNDS round(s): medians); ratio = relay / nchan (CPU and memory: lower is better)"
    printf '%-56s %14s %14s %8s\n' figure relay nchan ratio
    for sockets in $FANOUT; do
        prefix="fanout --sockets $sockets --rate $FANOUT_RATE "
        row "fanout $sockets: server+Redis CPU per delivery (µs)" fanout "$prefix" .server_redis_us_per_delivery 2
        row "fanout $sockets: deliveries/s" fanout "$prefix" .deliveries_per_s 0
        row "fanout $sockets: latency p50 (ms)" fanout "$prefix" .latency_p50_ms 1
        row "fanout $sockets: latency p99 (ms)" fanout "$prefix" .latency_p99_ms 1
        row "fanout $sockets: missing / duplicate / out of order" fanout "$prefix" \
            '"\(.missing) / \(.duplicates) / \(.out_of_order)"' text
        row "fanout $sockets: sockets closed by the server" fanout "$prefix" .closed 0
        row "fanout $sockets: load generator CPU per delivery (µs)" fanout "$prefix" .loadgen_us_per_delivery 2
    done
    if [ -n "$FANOUT_MAX" ]; then
        prefix="fanout --sockets $FANOUT_MAX --rate 0 "
        row "fanout $FANOUT_MAX ack-paced: server+Redis CPU per delivery (µs)" fanout "$prefix" .server_redis_us_per_delivery 2
        row "fanout $FANOUT_MAX ack-paced: deliveries/s" fanout "$prefix" .deliveries_per_s 0
        row "fanout $FANOUT_MAX ack-paced: latency p99 (ms)" fanout "$prefix" .latency_p99_ms 1
        row "fanout $FANOUT_MAX ack-paced: missing / duplicate / out of order" fanout "$prefix" \
            '"\(.missing) / \(.duplicates) / \(.out_of_order)"' text
    fi
    row "dms $DMS: server+Redis CPU per message (µs)" dms dms .server_redis_us_per_message 1
    row "dms $DMS: server+Redis CPU per delivery (µs)" dms dms .server_redis_us_per_delivery 2
    row "dms $DMS: deliveries/s" dms dms .deliveries_per_s 0
    row "dms $DMS: latency p50 (ms)" dms dms .latency_p50_ms 1
    row "dms $DMS: latency p99 (ms)" dms dms .latency_p99_ms 1
    row "dms $DMS: missing / duplicate / out of order" dms dms '"\(.missing) / \(.duplicates) / \(.out_of_order)"' text
    row "idle $IDLE: server RSS per connection (KiB)" idle idle .rss_per_connection_kib 2
    row "idle $IDLE: server CPU per connection per heartbeat (µs)" idle idle .server_us_per_conn_heartbeat 2
    row "idle $IDLE: Redis CPU per connection per heartbeat (µs)" idle idle .redis_us_per_conn_heartbeat 2
    row "resume $RESUME x 1000: time until all caught up (s)" resume resume .catch_up_s 2
    row "resume: Redis commands per client" resume resume .redis_commands_per_client 1
    row "resume: server+Redis CPU per replayed event (µs)" resume resume .server_redis_us_per_event 2
    row "resume: missing / duplicate / out of order" resume resume '"\(.missing) / \(.duplicates) / \(.out_of_order)"' text
    row "flood 3,000 x 60 KB unread: relay RSS growth (MiB)" flood flood .rss_growth_mib 1
    row "flood: throttled / closed / MB taken in" flood flood '"\(.throttled) / \(.closed) / \(.sent_bytes / 1000000 | floor)"' text
    echo "(counts are summed over sockets and must all read 0)"
fi

# ---------------------------------------------------------------------------------------------------------------
# The send path on a Redis Cluster of 3 primaries + 3 replicas (no persistence, like the single Redis) beside the
# single Redis, in alternating rounds of relay-bench send over WebSocket; then fan-out on the cluster. CPU per
# message counts the relay and every Redis process of the deployment (the cluster's six, replication included).
if wants cluster; then
    cluster_ports=() cluster_pids=() cluster_nodes=()
    for i in 1 2 3 4 5 6; do
        node_dir=$dir/cluster/node-$i
        mkdir -p "$node_dir"
        for _ in 1 2 3 4 5; do
            node_port=$(bash scripts/redis.sh free-port)
            bus_port=$(bash scripts/redis.sh free-port)
            [ "$node_port" != "$bus_port" ] && break
        done
        redis-server --port "$node_port" --bind 127.0.0.1 --dir "$node_dir" --save "" --appendonly no --daemonize yes \
            --pidfile "$node_dir/redis.pid" --logfile "$node_dir/redis.log" --cluster-enabled yes \
            --cluster-config-file nodes.conf --cluster-node-timeout 2000 --cluster-port "$bus_port" \
            --repl-diskless-sync-delay 0 >/dev/null
        bash scripts/redis.sh wait "$node_port" >/dev/null
        cluster_ports+=("$node_port")
        cluster_pids+=("$(<"$node_dir/redis.pid")")
        cluster_nodes+=("127.0.0.1:$node_port")
    done
    redis-cli --cluster create "${cluster_nodes[@]}" --cluster-replicas 1 --cluster-yes >"$dir/cluster/create.log" 2>&1
    for _ in $(seq 1 300); do
        online=$(for p in "${cluster_ports[@]}"; do redis-cli -p "$p" info replication; done | grep -c 'state=online' || true)
        redis-cli -p "${cluster_ports[0]}" cluster info | grep -q cluster_state:ok && [ "$online" -ge 3 ] && break
        sleep 0.2
    done
    cluster_url=$(printf 'redis://%s,' "${cluster_nodes[@]}")
    cluster_url=${cluster_url%,}
    cluster_pid_list=$(IFS=,; echo "${cluster_pids[*]}")
    echo
    echo "Redis Cluster: 3 primaries + 3 replicas on ${cluster_ports[*]}"

    # relay-bench send over WebSocket against the relay now running; prints its figures.
    cluster_send() {
        run "$SCENARIO_TIMEOUT" "$BENCH" send --url "http://127.0.0.1:$relay_port" --jwt-secret "$secret" --paths ws \
            --connections "$CONCURRENCY" --seconds "$SECONDS_PER_RUN" --threads "$THREADS" \
            --server-pids "$relay_pid" --redis-pid "$1" --json >"$dir/send.out" || true
        grep '^json ' "$dir/send.out" | cut -c6- |
            jq -r '[.messages_per_s, .ack_p50_ms, .ack_p99_ms, .errors, .server_redis_us_per_message] | @tsv' || true
    }
    single_rows=() cluster_rows=()
    for ((round = 0; round < ROUNDS; round++)); do
        relay_redis=$url start_relay
        single_rows+=("$(cluster_send "$redis_pid")")
        relay_redis=$cluster_url start_relay
        cluster_rows+=("$(cluster_send "$cluster_pid_list")")
    done
    echo
    echo "Send path over WebSocket, $CONCURRENCY in flight (best of $ROUNDS): one Redis beside a 3+3 Redis Cluster"
    printf '%-30s %12s %9s %9s %7s %12s\n' deployment "messages/s" p50 p99 errors "µs CPU/msg"
    IFS=$'\t' read -r sr sa sc se scpu <<<"$(printf '%s\n' "${single_rows[@]}" | sort -g -k1 | tail -1)"
    IFS=$'\t' read -r cr ca cc ce ccpu <<<"$(printf '%s\n' "${cluster_rows[@]}" | sort -g -k1 | tail -1)"
    printf '%-30s %12.0f %8.2fms %8.2fms %7.0f %12.1f\n' "one Redis" "$sr" "$sa" "$sc" "$se" "$scpu"
    printf '%-30s %12.0f %8.2fms %8.2fms %7.0f %12.1f\n' "Redis Cluster (3+3)" "$cr" "$ca" "$cc" "$ce" "$ccpu"
    echo "(cluster / one Redis: messages/s $(ratio "$cr" "$sr"), CPU per message $(ratio "$ccpu" "$scpu");" \
        "µs CPU/msg: relay + every Redis process per acknowledged message)"

    # Fan-out on the cluster: the relay's one subscription per channel lives on the channel's shard.
    relay_redis=$cluster_url start_relay
    echo
    fanout_sockets=${FANOUT%% *}
    run "$SCENARIO_TIMEOUT" "$BENCH" fanout --target relay --url "http://127.0.0.1:$relay_port" --jwt-secret "$secret" \
        --redis "$cluster_url" --server-pids "$relay_pid" --redis-pid "$cluster_pid_list" --threads "$THREADS" \
        --sockets "$fanout_sockets" --rate "$FANOUT_RATE" --seconds 10 --drain 60 >"$dir/last.out" 2>&1 ||
        echo "!! fanout on the cluster failed:"
    grep -v '^json ' "$dir/last.out" || true
    stop_relay
    relay_redis=
fi
