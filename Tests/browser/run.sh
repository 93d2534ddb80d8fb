#!/usr/bin/env bash
# The browser test: starts the debug relay in dev mode on a free loopback port, then runs
# Tests/browser/chat_test.py (Selenium, two headless Chromium sessions) against it. The relay, the
# browsers and, when this script started one, Redis are stopped however the run ends.
#
#   bash Tests/browser/run.sh
#
# Environment:
#   REDIS_URL         the Redis to use (scripts/test.sh gives its private one); unset: a private
#                     redis-server is started here for the run
#   RELAY_BIN         the relay binary; unset: `swift build --product relay` (with SWIFT_FLAGS) is run
#                     first so that the binary embeds the current web/ files
#   SWIFT_FLAGS       as for make; a --scratch-path in it is where the outputs go
#   BROWSER_OUT       where the screenshots, the relay's log and the Python venv go
#                     (default: <scratch path>/browser, i.e. .build/browser)
#   BROWSER_TIMEOUT_S the bound of the whole Python run (default 150)
#
# Needs the Debian packages chromium, chromium-driver and python3-venv (`make test` installs them);
# Selenium 4.51.0 is installed from PyPI into a venv under BROWSER_OUT on first use.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

SWIFT=${SWIFT:-swift}
SELENIUM_VERSION=4.51.0
CHROMIUM_BIN=${CHROMIUM_BIN:-/usr/bin/chromium}
CHROMEDRIVER_BIN=${CHROMEDRIVER_BIN:-/usr/bin/chromedriver}
read -r -a swift_flags <<<"${SWIFT_FLAGS:-}"

die() {
    echo "error: $*" >&2
    exit 1
}

scratch=.build
for ((i = 0; i < ${#swift_flags[@]}; i++)); do
    case ${swift_flags[i]} in
    --scratch-path=*) scratch=${swift_flags[i]#--scratch-path=} ;;
    --scratch-path) scratch=${swift_flags[i + 1]:-.build} ;;
    esac
done
out=${BROWSER_OUT:-$scratch/browser}
mkdir -p "$out"
out=$(cd "$out" && pwd)

for program in "$CHROMIUM_BIN" "$CHROMEDRIVER_BIN"; do
    [ -x "$program" ] || die "$program not found: install the Debian packages chromium and chromium-driver (make test does)"
done

# Python with Selenium, in a venv (Debian's system pip is closed to installs).
venv=$out/venv
if ! "$venv/bin/python" -c "import selenium, sys; sys.exit(selenium.__version__ != '$SELENIUM_VERSION')" 2>/dev/null; then
    python=python3
    [ -x /usr/bin/python3 ] && python=/usr/bin/python3
    echo "Setting up $venv (selenium $SELENIUM_VERSION)"
    "$python" -m venv --clear "$venv" || die "could not create a venv with $python: install the Debian package python3-venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "selenium==$SELENIUM_VERSION"
fi

if [ -z "${RELAY_BIN:-}" ]; then
    echo "==> $SWIFT build --product relay"
    "$SWIFT" build ${swift_flags[@]+"${swift_flags[@]}"} --product relay
    RELAY_BIN=$("$SWIFT" build ${swift_flags[@]+"${swift_flags[@]}"} --show-bin-path)/relay
fi
[ -x "$RELAY_BIN" ] || die "relay binary $RELAY_BIN not found"

redis_dir=""
relay_pid=""
test_pid=""

# shellcheck disable=SC2317 # invoked by the traps
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    # The test runs in a process group of its own (timeout makes one), with the browsers and their
    # drivers: whatever of it is still there goes, the leader gone or not.
    if [ -n "$test_pid" ] && kill -0 -- "-$test_pid" 2>/dev/null; then
        kill -TERM -- "-$test_pid" 2>/dev/null || true
        for _ in $(seq 1 15); do kill -0 -- "-$test_pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$test_pid" 2>/dev/null || true
    fi
    if [ -n "$relay_pid" ] && kill -0 "$relay_pid" 2>/dev/null; then
        kill -TERM "$relay_pid" 2>/dev/null || true
        for _ in $(seq 1 30); do kill -0 "$relay_pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$relay_pid" 2>/dev/null || true
        wait "$relay_pid" 2>/dev/null || true
    fi
    if [ -n "$redis_dir" ]; then
        bash scripts/redis.sh stop "$redis_dir" >/dev/null 2>&1 || true
        rm -rf "$redis_dir"
    fi
    if [ "$status" -ne 0 ] && [ -s "$out/relay.log" ]; then
        echo "--- last lines of $out/relay.log" >&2
        tail -n 30 "$out/relay.log" >&2
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -z "${REDIS_URL:-}" ]; then
    redis_dir=$(mktemp -d "${TMPDIR:-/tmp}/relay-test-redis.XXXXXX")
    echo $$ >"$redis_dir/owner.pid"
    for _ in 1 2 3 4 5; do
        port=$(bash scripts/redis.sh free-port)
        rc=0
        bash scripts/redis.sh start "$redis_dir" "$port" test >/dev/null || rc=$?
        if [ "$rc" -eq 0 ]; then REDIS_URL=redis://127.0.0.1:$port && break; fi
        [ "$rc" -eq 2 ] || exit "$rc"
    done
    [ -n "${REDIS_URL:-}" ] || die "could not start redis-server on a free port"
fi

# The relay, on a free port (another attempt if the port was taken in between).
port_open() {
    # shellcheck disable=SC2016 # $1 is expanded by the inner bash
    timeout 1 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}
relay_port=""
for _ in 1 2 3; do
    port=$(bash scripts/redis.sh free-port)
    "$RELAY_BIN" serve --dev --host 127.0.0.1 --port "$port" --redis "$REDIS_URL" --heartbeat 5 >"$out/relay.log" 2>&1 &
    relay_pid=$!
    deadline=$((SECONDS + 20))
    while kill -0 "$relay_pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
        if port_open "$port"; then relay_port=$port && break 2; fi
        sleep 0.1
    done
    kill -0 "$relay_pid" 2>/dev/null && die "the relay did not listen on port $port within 20 s"
    wait "$relay_pid" 2>/dev/null || true
    relay_pid=""
done
[ -n "$relay_port" ] || die "the relay did not start (see $out/relay.log)"
echo "Relay: http://127.0.0.1:$relay_port (pid $relay_pid, Redis $REDIS_URL, log $out/relay.log)"

start=$SECONDS
RELAY_URL=http://127.0.0.1:$relay_port BROWSER_OUT=$out CHROMIUM_BIN=$CHROMIUM_BIN CHROMEDRIVER_BIN=$CHROMEDRIVER_BIN \
    timeout -k 5 "${BROWSER_TIMEOUT_S:-150}" "$venv/bin/python" Tests/browser/chat_test.py &
test_pid=$!
status=0
wait "$test_pid" || status=$?
[ "$status" -eq 124 ] && echo "error: the browser test did not finish within ${BROWSER_TIMEOUT_S:-150} s" >&2
kill -0 "$relay_pid" 2>/dev/null || { echo "error: the relay exited during the browser test" >&2; [ "$status" -ne 0 ] || status=1; }
echo "Browser test: $([ "$status" -eq 0 ] && echo passed || echo FAILED) in $((SECONDS - start)) s"
exit "$status"
