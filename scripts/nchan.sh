#!/usr/bin/env bash
# nchan (Debian's nginx + libnginx-mod-nchan), the peer the benchmarks measure beside the relay: a private
# nginx on a loopback port that keeps its messages in Redis, with WebSocket subscribers and HTTP publishers.
#
#   scripts/nchan.sh start DIR PORT REDIS_PORT [PING_SECONDS]
#        write DIR/nginx.conf and start nginx on 127.0.0.1:PORT (2 workers, nchan storage in the Redis on
#        127.0.0.1:REDIS_PORT, WebSocket pings every PING_SECONDS, default 30), and wait until it answers.
#        Subscribers: ws://127.0.0.1:PORT/sub/CHANNEL. Publishers: POST http://127.0.0.1:PORT/pub/CHANNEL
#        (GET there, with Accept: text/json, gives the channel's subscriber count).
#   scripts/nchan.sh stop DIR     stop the nginx started from DIR (SIGQUIT, SIGKILL after 10 s)
#   scripts/nchan.sh pids DIR     print the pids of its worker processes, comma-separated
set -euo pipefail

NGINX=${NGINX:-/usr/sbin/nginx}
MODULE=${NCHAN_MODULE:-/usr/lib/nginx/modules/ngx_nchan_module.so}

die() {
    echo "error: $*" >&2
    exit 1
}

master_pid() {
    local pid
    [ -f "$1/nginx.pid" ] || return 1
    pid=$(<"$1/nginx.pid")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == nginx* ]] || return 1
    echo "$pid"
}

cmd_start() {
    [ $# -ge 3 ] || die "usage: $0 start DIR PORT REDIS_PORT [PING_SECONDS]"
    local port=$2 redis_port=$3 ping=${4:-30} dir i
    if [ ! -x "$NGINX" ] || [ ! -f "$MODULE" ]; then
        die "nginx with nchan not found: run 'bash scripts/deps.sh nginx libnginx-mod-nchan'"
    fi
    mkdir -p "$1"
    dir=$(cd "$1" && pwd)
    if master_pid "$dir" >/dev/null; then die "an nginx already runs from $dir"; fi
    mkdir -p "$dir/temp"
    chmod 777 "$dir/temp"
    cat >"$dir/nginx.conf" <<EOF
# Written by scripts/nchan.sh.
load_module $MODULE;
worker_processes 2;
worker_rlimit_nofile 20000;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
daemon on;
events {
    worker_connections 19000;
    multi_accept on;
}
http {
    access_log off;
    # The load generator publishes over a few keep-alive connections for the whole run: nginx's
    # default closes one after 1,000 requests.
    keepalive_requests 10000000;
    client_body_temp_path $dir/temp/body;
    proxy_temp_path $dir/temp/proxy;
    fastcgi_temp_path $dir/temp/fastcgi;
    uwsgi_temp_path $dir/temp/uwsgi;
    scgi_temp_path $dir/temp/scgi;
    upstream bench_redis {
        nchan_redis_server redis://127.0.0.1:$redis_port;
    }
    server {
        listen 127.0.0.1:$port backlog=4096;
        location ~ ^/pub/(.+)\$ {
            nchan_publisher http;
            nchan_channel_id \$1;
            nchan_redis_pass bench_redis;
        }
        location ~ ^/sub/(.+)\$ {
            nchan_subscriber websocket;
            nchan_channel_id \$1;
            nchan_redis_pass bench_redis;
            nchan_websocket_ping_interval $ping;
        }
    }
}
EOF
    "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
    for ((i = 0; i < 100; i++)); do
        if master_pid "$dir" >/dev/null && curl -s -o /dev/null "http://127.0.0.1:$port/pub/ready"; then return 0; fi
        sleep 0.1
    done
    tail -n 20 "$dir/error.log" >&2 || true
    die "nginx on 127.0.0.1:$port did not answer within 10 s (log: $dir/error.log)"
}

cmd_stop() {
    [ $# -eq 1 ] || die "usage: $0 stop DIR"
    local pid i
    pid=$(master_pid "$1") || return 1
    kill -QUIT "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    pkill -KILL -P "$pid" 2>/dev/null || true
    kill -KILL "$pid" 2>/dev/null || true
}

cmd_pids() {
    [ $# -eq 1 ] || die "usage: $0 pids DIR"
    local pid
    pid=$(master_pid "$1") || die "no nginx runs from $1"
    pgrep -P "$pid" | paste -sd, -
}

[ $# -ge 1 ] || die "usage: $0 start|stop|pids ..."
command=$1
shift
case $command in
start) cmd_start "$@" ;;
stop) cmd_stop "$@" ;;
pids) cmd_pids "$@" ;;
*) die "unknown command '$command'" ;;
esac
