#!/usr/bin/env bash
# `make cluster`: the fleet on loopback. A Redis Cluster of 3 primaries and 3 replicas (AOF on, files in
# data/cluster/node-PORT), two release relays sharing one secret, and HAProxy in front of them (health
# checks on GET /healthz, WebSocket upgrades passed through). Prints the one URL to open.
# `scripts/cluster.sh check` only checks the ports; `scripts/cluster.sh stop` stops all of it;
# `scripts/cluster.sh haproxy-config PORT RELAY_PORT...` prints HAProxy's configuration.
#
#   RELAY_PORT          the load balancer's port (default 8080)
#   CLUSTER_REDIS_PORT  the first Redis node's port; the nodes take six in a row (default 7001),
#                       their cluster bus ports the six from CLUSTER_REDIS_PORT + 10000
#   CLUSTER_RELAY_PORT  the first relay's port; the two relays take two in a row (default 8181)
#   CLUSTER_DIR         where the nodes, relays and HAProxy keep their files (default data/cluster)
#   The relays also see the environment: RELAY_REDIS_WAIT=1 makes them wait for a replica.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RELAY_PORT=${RELAY_PORT:-8080}
CLUSTER_REDIS_PORT=${CLUSTER_REDIS_PORT:-7001}
CLUSTER_RELAY_PORT=${CLUSTER_RELAY_PORT:-8181}
SWIFT=${SWIFT:-swift}
REDIS_SERVER_BIN=${REDIS_SERVER_BIN:-$(command -v redis-server || true)}
REDIS_CLI_BIN=${REDIS_CLI_BIN:-$(command -v redis-cli || true)}
HAPROXY_BIN=${HAPROXY_BIN:-$(command -v haproxy || echo /usr/sbin/haproxy)}
dir=${CLUSTER_DIR:-$PWD/data/cluster}
redis_ports=()
for i in 0 1 2 3 4 5; do redis_ports+=($((CLUSTER_REDIS_PORT + i))); done
relay_ports=("$CLUSTER_RELAY_PORT" $((CLUSTER_RELAY_PORT + 1)))

die() {
    echo "error: $*" >&2
    exit 1
}

# The pid in FILE, if that process is alive.
live_pid() {
    local pid
    [ -f "$1" ] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

stop_pidfile() {
    local pid i
    pid=$(live_pid "$1") || { rm -f "$1"; return 1; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    rm -f "$1"
}

# HAProxy's configuration: the front on loopback port $1, the relays on the ports after it. HAPROXY_CHECK
# sets the health checks' timing (default "inter 1s fall 2 rise 2"). `scripts/cluster.sh haproxy-config PORT
# RELAY_PORT...` prints it (the load-balancer test runs HAProxy with it).
haproxy_config() {
    local front=$1 index=0 port
    shift
    cat <<CFG
# Written by scripts/cluster.sh
global
    # Two file descriptors per proxied connection, under a 20,000 open-file limit.
    maxconn 9000

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    # A WebSocket, once upgraded, is a tunnel: the relay's heartbeat keeps it busy.
    timeout tunnel 1h

frontend relays
    bind 127.0.0.1:$front
    default_backend relays

backend relays
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    default-server ${HAPROXY_CHECK:-inter 1s fall 2 rise 2}
    # A relay that stops refuses new upgrades and requests with 503 before the health check sees
    # it: HAProxy then tries the other relay (sends are idempotent on client_msg_id).
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response 503
CFG
    for port in "$@"; do
        index=$((index + 1))
        echo "    server relay$index 127.0.0.1:$port check"
    done
}

cmd_stop() {
    local stopped=0
    [ -d "$dir" ] || { echo "The cluster is not running."; return 0; }
    stop_pidfile "$dir/haproxy.pid" && stopped=1
    for port in "${relay_ports[@]}"; do stop_pidfile "$dir/relay-$port.pid" && stopped=1; done
    bash scripts/redis.sh stop "$dir" && stopped=1
    if [ "$stopped" = 1 ]; then echo "Stopped the cluster (HAProxy, relays, Redis nodes; data kept in ${dir#"$PWD"/})."; else echo "The cluster is not running."; fi
    return 0
}

check_ports() {
    live_pid "$dir/haproxy.pid" >/dev/null && die "the cluster already runs: 'make stop' first"
    MAKE_TARGET=cluster bash scripts/redis.sh check-port "$RELAY_PORT" RELAY_PORT
    for port in "${redis_ports[@]}"; do
        MAKE_TARGET=cluster bash scripts/redis.sh check-port "$port" CLUSTER_REDIS_PORT
        MAKE_TARGET=cluster bash scripts/redis.sh check-port $((port + 10000)) CLUSTER_REDIS_PORT
    done
    for port in "${relay_ports[@]}"; do MAKE_TARGET=cluster bash scripts/redis.sh check-port "$port" CLUSTER_RELAY_PORT; done
}

start_node() {
    local port=$1 node=$dir/node-$1
    mkdir -p "$node"
    {
        echo "# Written by scripts/cluster.sh"
        echo "port $port"
        echo "bind 127.0.0.1"
        echo "dir $node"
        echo "daemonize yes"
        echo "pidfile $node/redis.pid"
        echo "logfile $node/redis.log"
        echo "appendonly yes"
        echo "appendfsync everysec"
        echo "cluster-enabled yes"
        echo "cluster-config-file nodes.conf"
        echo "cluster-node-timeout 2000"
        echo "cluster-port $((port + 10000))"
        echo "repl-diskless-sync-delay 0"
    } >"$node/redis.conf"
    "$REDIS_SERVER_BIN" "$node/redis.conf" >/dev/null
}

cmd_start() {
    [ -n "$REDIS_SERVER_BIN" ] && [ -n "$REDIS_CLI_BIN" ] || die "redis-server/redis-cli not found: run 'make deps'"
    [ -x "$HAPROXY_BIN" ] || die "haproxy not found: 'make cluster' installs it (Debian package haproxy)"
    local relay
    if [ -n "${RELAY_BIN:-}" ]; then
        relay=$RELAY_BIN
    elif [ -n "${SWIFT_FLAGS:-}" ]; then
        # shellcheck disable=SC2086 # SWIFT_FLAGS is a list of flags
        relay=$("$SWIFT" build $SWIFT_FLAGS -c release --show-bin-path)/relay
    else
        relay=.build/release/relay
    fi
    [ -x "$relay" ] || die "$relay not found: build it with 'make release'"
    mkdir -p "$dir"

    for port in "${redis_ports[@]}"; do start_node "$port"; done
    for port in "${redis_ports[@]}"; do bash scripts/redis.sh wait "$port"; done
    if "$REDIS_CLI_BIN" -p "${redis_ports[0]}" cluster info | grep -q 'cluster_slots_assigned:16384'; then
        echo "Redis Cluster restarted from data/cluster."
    else
        local nodes=()
        for port in "${redis_ports[@]}"; do nodes+=("127.0.0.1:$port"); done
        "$REDIS_CLI_BIN" --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 ||
            { cat "$dir/create.log" >&2; die "redis-cli --cluster create failed"; }
        echo "Redis Cluster created: 3 primaries, 3 replicas, ports ${redis_ports[0]}-${redis_ports[5]}."
    fi
    local deadline=$((SECONDS + 60))
    until "$REDIS_CLI_BIN" -p "${redis_ports[0]}" cluster info | grep -q 'cluster_state:ok'; do
        [ "$SECONDS" -lt "$deadline" ] || die "the Redis Cluster did not reach cluster_state:ok within 60 s"
        sleep 0.2
    done
    # Every primary with its replica in sync: until then a failover could not promote it.
    until [ "$(for port in "${redis_ports[@]}"; do "$REDIS_CLI_BIN" -p "$port" info replication; done | grep -c 'state=online')" -ge 3 ]; do
        [ "$SECONDS" -lt "$deadline" ] || die "the Redis Cluster's replicas are not in sync within 60 s"
        sleep 0.2
    done

    # One secret for both relays, so that a token from either works on the other.
    [ -s "$dir/jwt-secret" ] || head -c 48 /dev/urandom | base64 | tr -d '\n/+=' >"$dir/jwt-secret"
    local urls="" port
    for port in "${redis_ports[@]}"; do urls+="${urls:+,}redis://127.0.0.1:$port"; done
    for port in "${relay_ports[@]}"; do
        RELAY_JWT_SECRET=$(<"$dir/jwt-secret") nohup "$relay" serve --dev --port "$port" --redis "$urls" \
            >"$dir/relay-$port.log" 2>&1 </dev/null &
        echo $! >"$dir/relay-$port.pid"
    done
    for port in "${relay_ports[@]}"; do
        deadline=$((SECONDS + 30))
        until curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; do
            live_pid "$dir/relay-$port.pid" >/dev/null || { tail -n 20 "$dir/relay-$port.log" >&2; die "the relay on port $port stopped"; }
            [ "$SECONDS" -lt "$deadline" ] || die "the relay on port $port is not healthy within 30 s (log: $dir/relay-$port.log)"
            sleep 0.2
        done
    done

    haproxy_config "$RELAY_PORT" "${relay_ports[@]}" >"$dir/haproxy.cfg"
    "$HAPROXY_BIN" -D -p "$dir/haproxy.pid" -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 || { cat "$dir/haproxy.log" >&2; die "haproxy did not start"; }
    deadline=$((SECONDS + 15))
    until curl -fs "http://127.0.0.1:$RELAY_PORT/healthz" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || die "HAProxy on port $RELAY_PORT does not pass requests to the relays"
        sleep 0.2
    done

    cat <<MSG

  Open: http://127.0.0.1:$RELAY_PORT/

  HAProxy on $RELAY_PORT -> relays on ${relay_ports[0]} and ${relay_ports[1]} (dev mode, one shared secret)
  -> Redis Cluster on ${redis_ports[0]}-${redis_ports[5]} (3 primaries + 3 replicas, data in data/cluster).
  Logs: data/cluster/relay-*.log, data/cluster/node-*/redis.log.
  Inspect: redis-cli -c -p ${redis_ports[0]} cluster shards
  'make stop' stops all of it.

MSG
}

case ${1:-start} in
check) check_ports ;;
haproxy-config)
    shift
    haproxy_config "$@"
    ;;
start) cmd_start ;;
stop) cmd_stop ;;
*) die "usage: $0 [check|start|stop|haproxy-config PORT RELAY_PORT...]" ;;
esac
