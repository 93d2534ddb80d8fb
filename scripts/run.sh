#!/usr/bin/env bash
# `make run`: starts the project's local Redis (AOF on, files in data/redis) unless it already runs, then
# runs the release relay in dev mode in the foreground. `scripts/run.sh check` only checks the ports, so
# `make run` can fail on a taken port before it spends minutes building.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RELAY_PORT=${RELAY_PORT:-8080}
# Empty: 6379, or the next free port should another Redis (a system one) hold it.
REDIS_PORT=${REDIS_PORT:-}
SWIFT=${SWIFT:-swift}
redis_dir=$PWD/data/redis
secret_file=$PWD/data/dev-secret

check_ports() {
    local running_port
    if running_port=$(bash scripts/redis.sh port "$redis_dir"); then
        if [ -n "$REDIS_PORT" ] && [ "$running_port" != "$REDIS_PORT" ]; then
            echo "error: this project's Redis already runs on port $running_port, not REDIS_PORT=$REDIS_PORT." \
                "Run 'make run REDIS_PORT=$running_port', or 'make stop' first." >&2
            exit 1
        fi
    elif [ -n "$REDIS_PORT" ]; then
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

if running_port=$(bash scripts/redis.sh port "$redis_dir"); then
    redis_url=redis://127.0.0.1:$running_port
    echo "Redis already running at $redis_url (data in data/redis)."
else
    if [ -z "$REDIS_PORT" ]; then
        REDIS_PORT=6379
        if bash scripts/redis.sh check-port 6379 REDIS_PORT 2>/dev/null; then :; else
            # Installing redis-server on Debian starts a system Redis on 6379: this project's own
            # (its data in data/redis) takes another port rather than share it.
            REDIS_PORT=$(bash scripts/redis.sh free-port)
            echo "Port 6379 is taken (a system Redis?): this project's Redis uses port $REDIS_PORT."
        fi
    fi
    redis_url=redis://127.0.0.1:$REDIS_PORT
    bash scripts/redis.sh start "$redis_dir" "$REDIS_PORT" dev
    echo "Started Redis at $redis_url (AOF on, data in data/redis)."
fi

# Dev mode with a secret kept in data/dev-secret: tokens stay valid when the relay restarts, and
# `relay token` can sign for it.
secret_hint='"$RELAY_JWT_SECRET"'
if [ -z "${RELAY_JWT_SECRET:-}" ]; then
    if [ ! -s "$secret_file" ]; then
        mkdir -p "$(dirname "$secret_file")"
        (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$secret_file")
    fi
    RELAY_JWT_SECRET=$(cat "$secret_file")
    secret_hint='"$(cat data/dev-secret)"'
fi
export RELAY_JWT_SECRET

host=${RELAY_HOST:-127.0.0.1}
case $host in 0.0.0.0 | :: | "[::]") host=127.0.0.1 ;; *:*) host="[$host]" ;; esac
base=http://$host:$RELAY_PORT
cat <<MSG

  relay: $base/

  Try it:
    TOKEN=\$(curl -s -X POST $base/auth/dev-token -H 'Content-Type: application/json' \\
      -d '{"user_id": "alice"}' | sed -E 's/.*"token" *: *"([^"]*)".*/\1/')
    curl -s $base/channels -H "Authorization: Bearer \$TOKEN"

  Tokens outlive a restart (the secret is kept in data/dev-secret, unless RELAY_JWT_SECRET is
  set). Another way to make one: $relay token alice --jwt-secret $secret_hint

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
