#!/usr/bin/env bash
# Local redis-server instances for `make run` and `make test`, and loopback port helpers.
#
#   scripts/redis.sh start DIR PORT dev|test   start a daemonized redis-server on 127.0.0.1:PORT whose files
#                                              (redis.conf, redis.pid, redis.log, data) live in DIR, and wait
#                                              until it answers PING. dev: AOF on; test: no persistence,
#                                              DEBUG allowed from loopback.
#                                              Exit 2 when PORT turned out to be taken (pick another, retry).
#   scripts/redis.sh stop DIR                  stop every redis-server whose pidfile lies under DIR (SIGTERM,
#                                              SIGKILL after 10 s); exit 1 if none was running
#   scripts/redis.sh wait PORT [SECONDS]       wait until 127.0.0.1:PORT answers PING
#   scripts/redis.sh port DIR                  print the port of DIR's running server; exit 1 if none runs
#   scripts/redis.sh cli DIR [ARGS...]         redis-cli on DIR's running server
#   scripts/redis.sh free-port                 print a loopback TCP port that nothing listens on
#   scripts/redis.sh check-port PORT VARIABLE  exit 1, naming PORT and VARIABLE, if something listens on PORT
#   scripts/redis.sh reap                      stop the servers, and remove the dirs, of `make test` runs that
#                                              were killed before they could clean up
#
# DIR/redis.conf holds every setting, so a test can restart the same server on the same port with the same
# files: `"$REDIS_SERVER_BIN" "$REDIS_TEST_DIR/redis.conf"` (it daemonizes; wait for PING afterwards).
set -euo pipefail

REDIS_SERVER_BIN=${REDIS_SERVER_BIN:-$(command -v redis-server || true)}
REDIS_CLI_BIN=${REDIS_CLI_BIN:-$(command -v redis-cli || true)}
TEST_DIR_PREFIX=relay-test-redis.

die() {
    echo "error: $*" >&2
    exit 1
}

need_redis() {
    if [ -z "$REDIS_SERVER_BIN" ] || [ -z "$REDIS_CLI_BIN" ]; then
        die "redis-server/redis-cli not found: run 'make deps' (Debian package redis-server)"
    fi
}

# True if PID is alive and is a redis-server (guards against a recycled pid in a stale pidfile).
is_redis_pid() {
    local pid=$1 comm
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    if [ -r "/proc/$pid/comm" ]; then comm=$(<"/proc/$pid/comm"); else comm=$(ps -o comm= -p "$pid" 2>/dev/null || true); fi
    [[ $comm == redis-server* ]]
}

pid_of() {
    local pidfile=$1/redis.pid pid
    [ -f "$pidfile" ] || return 1
    pid=$(<"$pidfile")
    is_redis_pid "$pid" || return 1
    echo "$pid"
}

port_of() {
    sed -n 's/^port \([0-9]*\)$/\1/p' "$1/redis.conf" 2>/dev/null | tail -n 1
}

# True if something accepts TCP connections on 127.0.0.1:PORT.
port_in_use() {
    # shellcheck disable=SC2016 # $1 is expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

ping() {
    [ "$("$REDIS_CLI_BIN" -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]
}

cmd_wait() {
    local port=$1 seconds=${2:-${REDIS_START_TIMEOUT:-30}} deadline
    need_redis
    deadline=$((SECONDS + seconds))
    until ping "$port"; do
        [ "$SECONDS" -lt "$deadline" ] || die "redis-server on 127.0.0.1:$port did not answer PING within ${seconds}s"
        sleep 0.1
    done
}

cmd_start() {
    [ $# -eq 3 ] || die "usage: $0 start DIR PORT dev|test"
    local dir port=$2 mode=$3 seconds=${REDIS_START_TIMEOUT:-30} deadline pid
    need_redis
    mkdir -p "$1"
    dir=$(cd "$1" && pwd)
    if pid=$(pid_of "$dir"); then die "a redis-server (pid $pid) already runs from $dir"; fi
    rm -f "$dir/redis.pid"
    {
        echo "# Written by scripts/redis.sh; restart this server with: redis-server $dir/redis.conf"
        echo "port $port"
        echo "bind 127.0.0.1"
        echo "dir $dir"
        echo "daemonize yes"
        echo "pidfile $dir/redis.pid"
        echo "logfile $dir/redis.log"
        case $mode in
        dev) printf '%s\n' "appendonly yes" "appendfsync everysec" ;;
        test) printf '%s\n' 'save ""' "appendonly no" "enable-debug-command local" ;;
        *) die "unknown mode '$mode' (dev or test)" ;;
        esac
    } >"$dir/redis.conf"
    : >>"$dir/redis.log"
    local log_lines
    log_lines=$(wc -l <"$dir/redis.log")
    "$REDIS_SERVER_BIN" "$dir/redis.conf" >/dev/null
    # Redis writes its pidfile only once it listens; it exits if the port is taken.
    deadline=$((SECONDS + seconds))
    while :; do
        if pid=$(pid_of "$dir") && ping "$port"; then return 0; fi
        if tail -n +"$((log_lines + 1))" "$dir/redis.log" | grep -q 'Address already in use'; then
            echo "redis-server: port $port is taken" >&2
            return 2
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 20 "$dir/redis.log" >&2 || true
            die "redis-server on 127.0.0.1:$port did not answer PING within ${seconds}s (log: $dir/redis.log)"
        fi
        sleep 0.1
    done
}

cmd_stop() {
    [ $# -eq 1 ] || die "usage: $0 stop DIR"
    local dir=$1 pidfile pid stopped=0 i
    [ -d "$dir" ] || return 0
    while IFS= read -r -d '' pidfile; do
        pid=$(<"$pidfile") || continue
        if is_redis_pid "$pid"; then
            kill -TERM "$pid" 2>/dev/null || true
            for ((i = 0; i < 100; i++)); do
                is_redis_pid "$pid" || break
                sleep 0.1
            done
            if is_redis_pid "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
            stopped=$((stopped + 1))
        fi
        rm -f "$pidfile"
    done < <(find "$dir" -name '*.pid' ! -name owner.pid -type f -print0 2>/dev/null)
    [ "$stopped" -gt 0 ]
}

cmd_port() {
    [ $# -eq 1 ] || die "usage: $0 port DIR"
    pid_of "$1" >/dev/null || return 1
    port_of "$1"
}

cmd_cli() {
    [ $# -ge 1 ] || die "usage: $0 cli DIR [ARGS...]"
    local dir=$1 port
    shift
    need_redis
    port=$(cmd_port "$dir") || die "the local Redis is not running (start it with 'make run')"
    exec "$REDIS_CLI_BIN" -h 127.0.0.1 -p "$port" "$@"
}

cmd_free_port() {
    # Below Linux's ephemeral range (32768-60999), so outgoing connections rarely hold it; a caller
    # that loses the race to bind gets exit 2 from `start` and tries another port.
    local port i
    for ((i = 0; i < 200; i++)); do
        port=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
        if ! port_in_use "$port"; then
            echo "$port"
            return 0
        fi
    done
    die "found no free port on 127.0.0.1"
}

cmd_check_port() {
    [ $# -eq 2 ] || die "usage: $0 check-port PORT VARIABLE"
    local port=$1 var=$2 who="" alt
    if ! [[ $port =~ ^[0-9]+$ ]] || [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
        die "$var=$port is not a port number (1-65535)"
    fi
    port_in_use "$port" || return 0
    if command -v ss >/dev/null; then
        who=$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'users:(("[^"]*",pid=[0-9]*' | head -n 1 |
            sed 's/users:(("\([^"]*\)",pid=\([0-9]*\)/ by \1 (pid \2)/' || true)
    fi
    alt=$((port + 1))
    while [ "$alt" -le 65535 ] && port_in_use "$alt"; do alt=$((alt + 1)); done
    echo "error: port $port is already in use$who. Set $var to another port, e.g. 'make ${MAKE_TARGET:-run} $var=$alt'." >&2
    return 1
}

cmd_reap() {
    local dir owner
    for dir in "${TMPDIR:-/tmp}/$TEST_DIR_PREFIX"*; do
        [ -f "$dir/owner.pid" ] || continue
        owner=$(<"$dir/owner.pid")
        [[ $owner =~ ^[0-9]+$ ]] || continue
        kill -0 "$owner" 2>/dev/null && continue
        cmd_stop "$dir" || true
        rm -rf "$dir"
    done
}

[ $# -ge 1 ] || die "usage: $0 start|stop|wait|port|cli|free-port|check-port|reap ..."
command=$1
shift
case $command in
start) cmd_start "$@" ;;
stop) cmd_stop "$@" ;;
wait) cmd_wait "$@" ;;
port) cmd_port "$@" ;;
cli) cmd_cli "$@" ;;
free-port) cmd_free_port ;;
check-port) cmd_check_port "$@" ;;
reap) cmd_reap ;;
*) die "unknown command '$command'" ;;
esac
