#!/usr/bin/env bash
# `make run`: starts the project's local Redis (AOF on, files in data/redis) unless it already runs, then
# runs the release relay in dev mode in the foreground. `scripts/run.sh check` only checks the ports, so
# `make run` can fail on a taken port before it spends minutes building.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RELAY_PORT=${RELAY_PORT:-8080}
REDIS_PORT=${REDIS_PORT:-6379}
SWIFT=${SWIFT:-swift}
redis_dir=$PWD/data/redis

check_ports() {
    local running_port
    if running_port=$(bash scripts/redis.sh port "$redis_dir"); then
        if [ "$running_port" != "$REDIS_PORT" ]; then
            echo "error: this project's Redis already runs on port $running_port, not REDIS_PORT=$REDIS_PORT." \
                "Run 'make run REDIS_PORT=$running_port', or 'make stop' first." >&2
            exit 1
        fi
    else
        bash scripts/redis.sh check-port "$REDIS_PORT" REDIS_PORT
    fi
    bash scripts/redis.sh check-port "$RELAY_PORT" RELAY_PORT
}

check_ports
[ "${1:-}" = check ] && exit 0

if [ -n "${RELAY_BIN:-}" ]; then
    relay=$RELAY_BIN
elif [ -n "${SWIFT_FLAGS:-}" ]; then
    # shellcheck disable=SC2086 # SWIFT_FLAGS is a list of flags
    relay=$("$SWIFT" build $SWIFT_FLAGS -c release --show-bin-path)/relay
else
    relay=.build/release/relay
fi
[ -x "$relay" ] || { echo "error: $relay not found: build it with 'make release'" >&2; exit 1; }

redis_url=redis://127.0.0.1:$REDIS_PORT
if bash scripts/redis.sh port "$redis_dir" >/dev/null; then
    echo "Redis already running at $redis_url (data in data/redis)."
else
    bash scripts/redis.sh start "$redis_dir" "$REDIS_PORT" dev
    echo "Started Redis at $redis_url (AOF on, data in data/redis)."
fi

host=${RELAY_HOST:-127.0.0.1}
case $host in 0.0.0.0 | :: | "[::]") host=127.0.0.1 ;; *:*) host="[$host]" ;; esac
base=http://$host:$RELAY_PORT
cat <<MSG

  relay: $base/

  Try it:
    TOKEN=\$(curl -s -X POST $base/auth/dev-token -H 'Content-Type: application/json' \\
      -d '{"user_id": "alice"}' | sed -E 's/.*"token" *: *"([^"]*)".*/\1/')
    curl -s $base/channels -H "Authorization: Bearer \$TOKEN"

  Ctrl-C stops the relay. Redis keeps running: 'make redis-cli' inspects it, 'make stop' stops it.

MSG

# The relay exits on SIGINT itself; the shell stays to say what is still running.
trap : INT TERM
status=0
# No balancer to tell: Ctrl-C stops at once (--drain 0).
"$relay" serve --dev --drain 0 --port "$RELAY_PORT" --redis "$redis_url" || status=$?
echo
echo "relay stopped. Redis is still running at $redis_url: 'make stop' stops it."
exit "$status"
