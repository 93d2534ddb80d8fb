#!/usr/bin/env bash
# `make test`: runs every test suite against a private redis-server on a free loopback port, with its files in
# a fresh temporary directory. The server is stopped and the directory removed however the run ends
# (success, failure, Ctrl-C); the exit status is the tests'.
#
# The tests see:
#   REDIS_HOST, REDIS_PORT, REDIS_URL  the server
#   REDIS_SERVER_BIN                   the redis-server binary
#   REDIS_TEST_DIR                     the server's directory; REDIS_TEST_DIR/redis.conf holds all its settings
#                                      (port, dir, pidfile, daemonize yes), so a test can restart it on the same
#                                      port with `"$REDIS_SERVER_BIN" "$REDIS_TEST_DIR/redis.conf"` and then wait
#                                      for PING. A server whose pidfile (*.pid) lies under REDIS_TEST_DIR is
#                                      stopped at the end too.
#
# After the Swift tests, Tests/browser/run.sh drives the web client in headless Chromium against the same
# Redis (it needs chromium, chromium-driver and python3-venv: `make test` installs them). BROWSER_TESTS=0
# skips it. The run fails if any suite fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SWIFT=${SWIFT:-swift}
read -r -a swift_flags <<<"${SWIFT_FLAGS:-}"
read -r -a swift_test_flags <<<"${SWIFT_TEST_FLAGS:-}"

bash scripts/redis.sh reap
REDIS_TEST_DIR=$(mktemp -d "${TMPDIR:-/tmp}/relay-test-redis.XXXXXX")
echo $$ >"$REDIS_TEST_DIR/owner.pid"

# shellcheck disable=SC2317 # invoked by the traps
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    bash scripts/redis.sh stop "$REDIS_TEST_DIR" || true
    rm -rf "$REDIS_TEST_DIR"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

started=""
for _ in 1 2 3 4 5; do
    port=$(bash scripts/redis.sh free-port)
    rc=0
    bash scripts/redis.sh start "$REDIS_TEST_DIR" "$port" test || rc=$?
    if [ "$rc" -eq 0 ]; then started=yes && break; fi
    [ "$rc" -eq 2 ] || exit "$rc"
done
[ -n "$started" ] || { echo "error: could not start redis-server on a free port" >&2; exit 1; }

export REDIS_HOST=127.0.0.1 REDIS_PORT=$port REDIS_URL=redis://127.0.0.1:$port
export REDIS_SERVER_BIN=${REDIS_SERVER_BIN:-$(command -v redis-server)} REDIS_TEST_DIR
echo "Test Redis: $REDIS_URL ($("$REDIS_SERVER_BIN" --version | grep -o 'v=[^ ]*'), files in $REDIS_TEST_DIR)"

lua_status=0
if [ -f Tests/lua/check.sh ]; then
    echo "==> Tests/lua/check.sh"
    bash Tests/lua/check.sh 2>&1 | tee "$REDIS_TEST_DIR/lua-check.out" || lua_status=$?
    # A failure that the script counted but did not put in its exit status still fails the run.
    if [ "$lua_status" -eq 0 ] && grep -Eq '(^|[^0-9])[1-9][0-9]* failed' "$REDIS_TEST_DIR/lua-check.out"; then
        lua_status=1
    fi
fi

echo "==> $SWIFT build --build-tests"
"$SWIFT" build ${swift_flags[@]+"${swift_flags[@]}"} --build-tests

echo "==> $SWIFT test"
test_status=0
"$SWIFT" test ${swift_flags[@]+"${swift_flags[@]}"} ${swift_test_flags[@]+"${swift_test_flags[@]}"} || test_status=$?

browser_status=0
if [ "${BROWSER_TESTS:-1}" != 0 ]; then
    echo "==> Tests/browser/run.sh"
    # The relay binary that `swift build --build-tests` just built (with the current web/ files).
    relay_bin="$("$SWIFT" build ${swift_flags[@]+"${swift_flags[@]}"} --show-bin-path)/relay"
    RELAY_BIN=$relay_bin bash Tests/browser/run.sh || browser_status=$?
fi

[ "$test_status" -ne 0 ] && exit "$test_status"
[ "$lua_status" -ne 0 ] && { echo "error: Tests/lua/check.sh failed" >&2; exit "$lua_status"; }
[ "$browser_status" -ne 0 ] && { echo "error: the browser test (Tests/browser/run.sh) failed" >&2; exit "$browser_status"; }
exit 0
