#!/usr/bin/env python3
"""Failover drill: a primary of the Redis Cluster is killed (SIGKILL) during a send loop.

For each --redis-wait value given (default: 0 then 1), starts the fleet of `make cluster` afresh
(scripts/cluster.sh, files in data/drill), picks channels that live on the first node (a primary),
runs SENDERS send loops through the load balancer (each message retried with its client_msg_id
until it is acknowledged), kills that primary once ACKS_BEFORE messages are acknowledged, waits
until its replica is promoted, restarts it (it comes back as the new primary's replica), lets
ACKS_AFTER more messages through, stops the fleet and reads every channel's history. Reports the
acknowledged messages missing from the log (lost), logged twice, and seq gaps, with timings.

Usage: RELAY_BIN=.build/release/relay python3 scripts/failover-drill.py [WAIT ...]
Ports: RELAY_PORT (default 18080), CLUSTER_REDIS_PORT (17101), CLUSTER_RELAY_PORT (18181).
"""
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIR = os.path.join(ROOT, "data", "drill")
LB_PORT = int(os.environ.get("RELAY_PORT", "18080"))
REDIS_PORT = int(os.environ.get("CLUSTER_REDIS_PORT", "17101"))
RELAY_PORT = int(os.environ.get("CLUSTER_RELAY_PORT", "18181"))
SENDERS = int(os.environ.get("SENDERS", "8"))
ACKS_BEFORE = int(os.environ.get("ACKS_BEFORE", "2000"))
ACKS_AFTER = int(os.environ.get("ACKS_AFTER", "1000"))
BASE = f"http://127.0.0.1:{LB_PORT}"


def env():
    e = dict(os.environ)
    e.update(RELAY_PORT=str(LB_PORT), CLUSTER_REDIS_PORT=str(REDIS_PORT), CLUSTER_RELAY_PORT=str(RELAY_PORT), CLUSTER_DIR=DIR)
    return e


def cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=20).stdout


def request(method, path, token=None, body=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(BASE + path, data=data, method=method)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, None
    except Exception:
        return 0, None


def owner_port(slot, asked):
    for line in cli(asked, "cluster", "nodes").splitlines():
        fields = line.split()
        if len(fields) < 9 or "master" not in fields[2] or "fail" in fields[2]:
            continue
        for part in fields[8:]:
            low, _, high = part.partition("-")
            if low.isdigit() and int(low) <= slot <= int(high or low):
                return int(fields[1].split("@")[0].rsplit(":", 1)[1])
    return None


def drill(wait):
    subprocess.run(["bash", "scripts/cluster.sh", "stop"], cwd=ROOT, env=env(), capture_output=True)
    shutil.rmtree(DIR, ignore_errors=True)
    e = env()
    e.update(RELAY_REDIS_WAIT=str(wait), RELAY_REDIS_WAIT_MS="500")
    subprocess.run(["bash", "scripts/cluster.sh", "start"], cwd=ROOT, env=e, check=True, capture_output=True)
    try:
        return run(wait)
    finally:
        subprocess.run(["bash", "scripts/cluster.sh", "stop"], cwd=ROOT, env=env(), capture_output=True)


def run(wait):
    _, body = request("POST", "/auth/dev-token", body={"user_id": "drill"})
    token = body["token"]
    victim = REDIS_PORT
    channels = []
    while len(channels) < SENDERS:
        status, channel = request("POST", "/channels", token, {"type": "group", "members": []})
        assert status == 201, status
        slot = int(cli(victim, "cluster", "keyslot", channel["id"]).strip())
        if owner_port(slot, victim) == victim:
            channels.append((channel["id"], slot))
    slot = channels[0][1]
    acks = []
    lock = threading.Lock()
    unavailable = [0]
    stop = threading.Event()

    def sender(channel):
        index = 0
        while not stop.is_set():
            index += 1
            client_id = f"d{index}"
            while not stop.is_set():
                status, body = request("POST", f"/channels/{channel}/messages", token, {"client_msg_id": client_id, "text": f"t{index}"})
                if status in (200, 201):
                    with lock:
                        acks.append((channel, body["message"]["seq"], client_id, time.monotonic()))
                    break
                with lock:
                    unavailable[0] += 1
                time.sleep(0.05)

    threads = [threading.Thread(target=sender, args=(channel,)) for channel, _ in channels]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 300
    while len(acks) < ACKS_BEFORE:
        assert time.monotonic() < deadline, "no progress before the kill"
        time.sleep(0.01)
    with open(os.path.join(DIR, f"node-{victim}", "redis.pid")) as f:
        pid = int(f.read())
    killed_at = time.monotonic()
    acks_at_kill = len(acks)
    os.kill(pid, 9)
    other = REDIS_PORT + 1
    while owner_port(slot, other) in (None, victim):
        assert time.monotonic() < killed_at + 60, "no replica promoted within 60 s"
        time.sleep(0.1)
    promoted_at = time.monotonic()
    subprocess.run(["redis-server", os.path.join(DIR, f"node-{victim}", "redis.conf")], check=True, capture_output=True)
    while len(acks) < acks_at_kill + ACKS_AFTER:
        if time.monotonic() > killed_at + 300:
            stop.set()
            raise SystemExit("no progress after the failover")
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join()
    # The longest pause between two acknowledgements after the kill.
    times = sorted(t for _, _, _, t in acks if t >= killed_at - 1)
    longest = max((b - a for a, b in zip(times, times[1:])), default=0)

    lost = dup = gaps = 0
    for channel, _ in channels:
        events, after = [], 0
        while True:
            status, page = request("GET", f"/channels/{channel}/messages?after={after}&limit=200", token)
            assert status == 200, status
            events += page["messages"]
            if not page["has_more"]:
                break
            after = page["messages"][-1]["seq"]
        seqs = [event["seq"] for event in events]
        gaps += sum(1 for a, b in zip(seqs, seqs[1:]) if b != a + 1)
        by_id = {}
        for event in events:
            if event["type"] == "message":
                by_id.setdefault(event["client_msg_id"], []).append(event["seq"])
        dup += sum(1 for seqs_of in by_id.values() if len(seqs_of) > 1)
        for ack_channel, seq, client_id, _ in acks:
            if ack_channel == channel and by_id.get(client_id, [None])[0] != seq:
                lost += 1
    return {
        "redis_wait": wait,
        "acknowledged": len(acks),
        "acknowledged_before_kill": acks_at_kill,
        "answered_503": unavailable[0],
        "lost_acknowledged": lost,
        "logged_twice": dup,
        "seq_gaps": gaps,
        "promotion_s": round(promoted_at - killed_at, 2),
        "longest_pause_s": round(longest, 2),
    }


if __name__ == "__main__":
    waits = [int(arg) for arg in sys.argv[1:]] or [0, 1]
    for wait in waits:
        print(json.dumps(drill(wait)), flush=True)
