#!/usr/bin/env bash
# Direct check of the relay's Lua scripts (lua/*.lua) against a running Redis 7.
#
#   REDIS_PORT=6399 [REDIS_HOST=127.0.0.1] [KEEP=1] Tests/lua/check.sh
#
# Loads every script with SCRIPT LOAD, runs them with EVALSHA on fresh channel ids (unique per
# run), and asserts replies, error codes, stored state, log entries and shard Pub/Sub payloads.
# Prints "N passed, M failed" and exits non-zero if anything failed. The keys it created are
# deleted at the end unless KEEP=1. Needs only bash and redis-cli.
set -u

PORT="${REDIS_PORT:?set REDIS_PORT}"
HOST="${REDIS_HOST:-127.0.0.1}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LUA="$(cd "$HERE/../../lua" && pwd)"
TMP="$(mktemp -d)"
RUN="t$(date +%s)$$$RANDOM"          # unique prefix for this run's channel ids
PASS=0
FAIL=0
USED_KEYS=()
SUB_PIDS=()

cli() { redis-cli -h "$HOST" -p "$PORT" "$@"; }

cleanup() {
  local p
  for p in "${SUB_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  if [ "${KEEP:-0}" != 1 ] && [ "${#USED_KEYS[@]}" -gt 0 ]; then
    printf '%s\n' "${USED_KEYS[@]}" | sort -u | xargs -d '\n' -n 1 redis-cli -h "$HOST" -p "$PORT" DEL >/dev/null 2>&1
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

if ! cli PING >/dev/null 2>&1; then
  echo "cannot reach Redis at $HOST:$PORT" >&2
  exit 2
fi

ok()   { PASS=$((PASS + 1)); }
bad()  { FAIL=$((FAIL + 1)); echo "FAIL: $1" >&2; [ $# -gt 1 ] && printf '  %s\n' "${@:2}" >&2; return 0; }
eq()   {
  if [ "$2" == "$3" ]; then ok
  elif [[ "$2$3" == *$'\n'* ]]; then bad "$1" "diff expected actual:"; diff <(printf '%s\n' "$2") <(printf '%s\n' "$3") | head -20 >&2
  else bad "$1" "expected: $2" "actual:   $3"; fi
}
match(){ if [[ "$3" =~ $2 ]]; then ok; else bad "$1" "expected to match: $2" "actual: $3"; fi; }

# Load the scripts, each behind lua/prelude.lua as the relay runs them. RETAIN SCRIPT EVENTS MS
# loads a variant with those retention limits (the line the relay rewrites) as SCRIPT-EVENTS-MS.
declare -A SHA
load() { # load NAME SCRIPT [EVENTS MS]
  local src
  src="$(cat "$LUA/prelude.lua" "$LUA/$2.lua")"
  if [ $# -gt 2 ]; then
    src="${src/local RETAIN_EVENTS, RETAIN_MS = 0, 0/local RETAIN_EVENTS, RETAIN_MS = $3, $4}"
  fi
  SHA[$1]="$(cli SCRIPT LOAD "$src" 2>&1)"
  match "load $1" '^[0-9a-f]{40}$' "${SHA[$1]}"
}
for s in send change channel_create members_add members_remove read; do
  load "$s" "$s"
done

# ev SCRIPT NUMKEYS KEYS... ARGV...  -> sets OUT (stdout, raw), ERR (error text), RC
ev() {
  local s="$1" n="$2"; shift 2
  local i
  for ((i = 1; i <= n; i++)); do USED_KEYS+=("${!i}"); done
  OUT="$(cli -e EVALSHA "${SHA[$s]}" "$n" "$@" 2>"$TMP/err")"
  RC=$?
  ERR="$(cat "$TMP/err")"
}
line() { sed -n "${2}p" <<<"$1"; }
# expect_err NAME CODE: the last call failed with "-CODE <detail>"
expect_err() {
  if [ "$RC" -ne 0 ] && [[ "$ERR" == "$2 "* ]]; then ok; else bad "$1" "expected error: $2 ..." "rc=$RC out=$OUT err=$ERR"; fi
}
expect_ok() { if [ "$RC" -eq 0 ]; then ok; else bad "$1" "unexpected error: $ERR"; fi; }

# Key helpers for channel $1.
k() { printf 'ch:{%s}:%s' "$1" "$2"; }
base4() { echo "$(k "$1" meta) $(k "$1" members) $(k "$1" seq) $(k "$1" log)"; }
base5() { echo "$(base4 "$1") $(k "$1" msgs)"; }
base6() { echo "$(base5 "$1") $(k "$1" membership)"; }
create() { # create CID TYPE NAME CREATOR MEMBERS...
  local c="$1"; shift
  ev channel_create 6 $(base6 "$c") "$c" "$1" "$2" "$3" "$(k "$c" live)" "${@:4}"
}
msg_body() { # msg_body MID SENDER TEXT(escaped) CMID
  printf '"type":"message","message_id":"%s","sender_id":"%s","text":"%s","client_msg_id":"%s"' "$1" "$2" "$3" "$4"
}
sendkeys() { echo "$(base5 "$1") $(k "$1" dedup) $(k "$1" dedupx)"; }
send() { # send CID SENDER MID TEXT CMID [TTL]
  ev send 7 $(sendkeys "$1") "$2" "$3" "$(msg_body "$3" "$2" "$4" "$5")" "$1" "$(k "$1" live)" "$2:$5" "${6:-600}"
}
edit() { # edit CID SENDER MID TEXT
  ev change 5 $(base5 "$1") "$2" "$3" "$(printf '"type":"edit","message_id":"%s","sender_id":"%s","text":"%s"' "$3" "$2" "$4")" "$1" "$(k "$1" live)" edit
}
del() { # del CID SENDER MID
  ev change 5 $(base5 "$1") "$2" "$3" "$(printf '"type":"delete","message_id":"%s","sender_id":"%s"' "$3" "$2")" "$1" "$(k "$1" live)" delete
}
add() { # add CID ACTOR MAX USERS...
  local c="$1"; shift
  ev members_add 6 $(base6 "$c") "$1" "$c" "$(k "$c" live)" "$2" "${@:3}"
}
rm_member() { # rm_member CID ACTOR USER
  ev members_remove 6 $(base6 "$1") "$2" "$1" "$(k "$1" live)" "$3"
}
read_mark() { # read_mark CID USER SESSION SEQ
  USED_KEYS+=("$(k "$1" reads)")
  ev read 4 "$(k "$1" meta)" "$(k "$1" members)" "$(k "$1" seq)" "$(k "$1" reads)" "$2" "$3" "$4"
}
log_at() { cli XRANGE "$(k "$1" log)" "$2-0" "$2-0" | sed -n 3p; }
seq_of() { local v; v="$(cli GET "$(k "$1" seq)")"; echo "${v:-0}"; }
now_ms() { local t; t="$(cli TIME)"; local s u; s="$(line "$t" 1)"; u="$(line "$t" 2)"; echo $((s * 1000 + u / 1000)); }
# event CID SEQ BODY CREATED_AT: the exact JSON an event must have
event() { printf '{"channel_id":"%s","seq":%s,%s,"created_at":%s}' "$1" "$2" "$3" "$4"; }
created_at_of() { sed -n 's/.*,"created_at":\([0-9]*\)}$/\1/p' <<<"$1"; }

G="${RUN}g"      # a group
D="${RUN}d"      # a dm
X="${RUN}none"   # never created

# ---- live subscription, started before anything is written to G
cli SSUBSCRIBE "$(k "$G" live)" >"$TMP/sub" 2>&1 &
SUB_PIDS+=($!)
for _ in $(seq 50); do grep -q '^ssubscribe$' "$TMP/sub" 2>/dev/null && break; sleep 0.1; done

# ---- channel_create
T0="$(now_ms)"
create "$G" group "Team \"A\"" alice alice bob carol
expect_ok "create group"
eq "create group reply" "$(printf '1\n3')" "$OUT"
eq "group seq after create" 3 "$(seq_of "$G")"
eq "group members" "$(printf 'alice\nbob\ncarol')" "$(cli SMEMBERS "$(k "$G" members)" | sort)"
META="$(cli HMGET "$(k "$G" meta)" type name creator created_at)"
eq "meta type/name/creator" "$(printf 'group\nTeam "A"\nalice')" "$(sed -n 1,3p <<<"$META")"
CA="$(line "$META" 4)"
match "meta created_at is integer ms" '^[0-9]{13}$' "$CA"
if [ "$CA" -ge $((T0 - 60000)) ] && [ "$CA" -le $((T0 + 60000)) ]; then ok; else bad "created_at near TIME" "$CA vs $T0"; fi
eq "member_joined event 1" "$(event "$G" 1 '"type":"member_joined","user_id":"alice","sender_id":"alice"' "$CA")" "$(log_at "$G" 1)"
eq "member_joined event 3" "$(event "$G" 3 '"type":"member_joined","user_id":"carol","sender_id":"alice"' "$CA")" "$(log_at "$G" 3)"
create "$G" group "" alice alice
expect_err "create taken group id" CONFLICT
create "$G" dm "" alice alice bob
expect_err "create dm over a group id" CONFLICT
eq "seq unchanged by refused create" 3 "$(seq_of "$G")"

create "$D" dm "" alice alice bob
eq "create dm reply" "$(printf '1\n2')" "$OUT"
create "$D" dm "" alice alice bob
eq "create same dm again is idempotent" 0 "$OUT"
eq "dm seq unchanged by idempotent create" 2 "$(seq_of "$D")"
create "${RUN}d3" dm "" alice alice bob carol
expect_err "dm with three members" BADREQUEST
create "${RUN}d1" dm "" alice alice alice
expect_err "dm with one distinct member" BADREQUEST
create "${RUN}bt" party "" alice alice
expect_err "bad channel type" BADREQUEST
create "${RUN}nc" group "" alice bob
expect_err "creator missing from members" BADREQUEST
eq "refused creates leave no meta" "0000" "$(for c in d3 d1 bt nc; do cli EXISTS "$(k "$RUN$c" meta)"; done | tr -d '\n')"

# ---- send
T0="$(now_ms)"
send "$G" alice m1 'hi \"x\" \\ \u00e9' c1
expect_ok "send"
eq "send reply flag" 1 "$(line "$OUT" 1)"
FIRST="$(line "$OUT" 2)"
CA="$(created_at_of "$FIRST")"
match "send created_at is integer ms" '^[0-9]{13}$' "$CA"
if [ "$CA" -ge $((T0 - 60000)) ] && [ "$CA" -le $((T0 + 60000)) ]; then ok; else bad "send created_at near TIME" "$CA vs $T0"; fi
eq "message event JSON" "$(event "$G" 4 "$(msg_body m1 alice 'hi \"x\" \\ \u00e9' c1)" "$CA")" "$FIRST"
eq "log entry 4-0 is the event" "$FIRST" "$(log_at "$G" 4)"
eq "msgs[m1] = sender" alice "$(cli HGET "$(k "$G" msgs)" m1)"
eq "dedup entry holds the seq" 4 "$(cli HGET "$(k "$G" dedup)" alice:c1)"
eq "dedup entry expires ttl after created_at" $((CA + 600000)) "$(cli ZSCORE "$(k "$G" dedupx)" alice:c1)"
eq "no key per message" 0 "$(cli EXISTS "$(k "$G" dedup:alice:c1)")"

send "$G" alice m1-retry 'other text' c1
expect_ok "duplicate send"
eq "duplicate returns the first event, byte-identical" "$(printf '0\n%s' "$FIRST")" "$OUT"
eq "duplicate writes no seq" 4 "$(seq_of "$G")"
eq "duplicate records no message id" 0 "$(cli HEXISTS "$(k "$G" msgs)" m1-retry)"
send "$G" bob m1-bob 'same cmid, other sender' c1
eq "same client_msg_id from another sender is new" "1 5" "$(line "$OUT" 1) $(seq_of "$G")"
send "$G" alice m1 'reused message id' c-new
expect_err "message id taken" CONFLICT
send "$G" dave m-d 'x' cd
expect_err "send by non-member" NOTMEMBER
send "$X" alice m-x 'x' cx
expect_err "send to unknown channel" NOTFOUND
send "$G" alice m-bad 'x' c-bad 0
expect_err "bad dedup ttl" BADREQUEST
ev send 7 $(sendkeys "$G") alice m-def "$(msg_body m-def alice d c-def)" "$G" "$(k "$G" live)" alice:c-def ""
eq "default dedup ttl 86400 s" $(($(created_at_of "$(line "$OUT" 2)") + 86400000)) "$(cli ZSCORE "$(k "$G" dedupx)" alice:c-def)"
eq "refused sends write nothing" 6 "$(seq_of "$G")"

# gap-free seqs: 30 sequential + 40 concurrent sends
for i in $(seq 1 30); do send "$G" bob "s$i" "n $i" "s$i"; done
eq "30 sequential sends" 36 "$(seq_of "$G")"
PIDS=()
for i in $(seq 1 40); do
  cli -e EVALSHA "${SHA[send]}" 7 $(sendkeys "$G") carol "p$i" \
    "$(msg_body "p$i" carol "p $i" "p$i")" "$G" "$(k "$G" live)" "carol:p$i" 600 >"$TMP/par$i" 2>&1 &
  PIDS+=($!)
done
PFAIL=0
for p in "${PIDS[@]}"; do wait "$p" || PFAIL=$((PFAIL + 1)); done
eq "40 concurrent sends succeed" 0 "$PFAIL"
eq "concurrent sends get distinct seqs 37..76" "$(seq 37 76)" "$(for i in $(seq 1 40); do sed -n 2p "$TMP/par$i" | sed 's/.*"seq":\([0-9]*\),.*/\1/'; done | sort -n)"
eq "seq key = last seq" 76 "$(seq_of "$G")"
eq "log ids are exactly 1-0..76-0" "$(seq 1 76 | sed 's/$/-0/')" "$(cli XRANGE "$(k "$G" log)" - + | awk 'NR % 3 == 1')"
eq "every logged seq matches its id" "" "$(cli XRANGE "$(k "$G" log)" - + | awk 'NR % 3 == 1 { id = $0; sub(/-0$/, "", id) } NR % 3 == 0 { if (index($0, "\"seq\":" id ",") == 0) print id }')"

# ---- edit
edit "$G" bob m1 'stolen'
expect_err "edit by another member" FORBIDDEN
edit "$G" dave m1 'x'
expect_err "edit by non-member" NOTMEMBER
edit "$G" alice nope 'x'
expect_err "edit unknown message" NOTFOUND
edit "$X" alice m1 'x'
expect_err "edit in unknown channel" NOTFOUND
edit "$G" alice m1 'new \"text\"'
expect_ok "edit own message"
CA="$(created_at_of "$OUT")"
eq "edit event JSON" "$(event "$G" 77 '"type":"edit","message_id":"m1","sender_id":"alice","text":"new \"text\""' "$CA")" "$OUT"
eq "edit logged at 77-0" "$OUT" "$(log_at "$G" 77)"

# ---- delete
del "$G" bob m1
expect_err "delete by another member" FORBIDDEN
del "$G" alice m1
expect_ok "delete own message"
CA="$(created_at_of "$OUT")"
eq "delete event JSON" "$(event "$G" 78 '"type":"delete","message_id":"m1","sender_id":"alice"' "$CA")" "$OUT"
eq "msgs[m1] marked deleted" '!alice' "$(cli HGET "$(k "$G" msgs)" m1)"
del "$G" alice m1
expect_err "delete twice" CONFLICT
edit "$G" alice m1 'x'
expect_err "edit a deleted message" CONFLICT
del "$G" alice nope
expect_err "delete unknown message" NOTFOUND
ev change 5 $(base5 "$G") alice m1 '"type":"x"' "$G" "$(k "$G" live)" undo
expect_err "change of another kind" BADREQUEST
eq "refused edits/deletes write nothing" 78 "$(seq_of "$G")"
send "$G" alice m-dup-after-del 'x' c1
eq "dedup still answers after delete" "$(printf '0\n%s' "$FIRST")" "$OUT"

# dedup entries expire: one past its ttl is not a duplicate, and sends forget expired ones
E="${RUN}dx"
create "$E" group "" carol carol
for i in 1 2 3; do send "$E" carol "m-e$i" 'short' "e$i" 1; done
sleep 1.2
send "$E" carol m-e1-again 'after the window' e1 1
eq "a client_msg_id past its dedup window is a new message" "1 5" "$(line "$OUT" 1) $(seq_of "$E")"
eq "the new event's seq is its dedup entry's" 5 "$(cli HGET "$(k "$E" dedup)" carol:e1)"
eq "expired entries are forgotten" "0 0" "$(cli HEXISTS "$(k "$E" dedup)" carol:e2) $(cli ZSCORE "$(k "$E" dedupx)" carol:e3 | wc -w)"

# ---- members_add
add "$D" alice 100 carol
expect_err "add to a dm" BADREQUEST
add "$G" dave 100 erin
expect_err "add by non-member" NOTMEMBER
add "$X" alice 100 erin
expect_err "add to unknown channel" NOTFOUND
add "$G" alice 4 dave erin
expect_err "add over the limit" TOOMANY
eq "refused add writes nothing" "78 3" "$(seq_of "$G") $(cli SCARD "$(k "$G" members)")"
add "$G" alice 5 dave bob dave erin
expect_ok "add new members"
CA="$(created_at_of "$(line "$OUT" 1)")"
eq "add reply = new events only" "$(event "$G" 79 '"type":"member_joined","user_id":"dave","sender_id":"alice"' "$CA")
$(event "$G" 80 '"type":"member_joined","user_id":"erin","sender_id":"alice"' "$CA")" "$OUT"
eq "added logged" "$(line "$OUT" 2)" "$(log_at "$G" 80)"
add "$G" alice 5 dave erin bob
eq "adding members again logs nothing" "|78" "$OUT|$(( $(seq_of "$G") - 2 ))"
add "$G" bob 5 alice
eq "add of existing member at the limit is fine" "" "$OUT"

# ---- members_remove
rm_member "$D" alice bob
expect_err "leave a dm" BADREQUEST
rm_member "$X" alice bob
expect_err "remove in unknown channel" NOTFOUND
rm_member "$G" bob carol
expect_err "member removes another" FORBIDDEN
rm_member "$G" zed bob
expect_err "outsider removes a member" NOTMEMBER
rm_member "$G" alice zed
expect_err "remove a non-member" NOTFOUND
rm_member "$G" bob bob
expect_ok "member leaves"
CA="$(created_at_of "$OUT")"
eq "member_left event (self)" "$(event "$G" 81 '"type":"member_left","user_id":"bob","sender_id":"bob"' "$CA")" "$OUT"
rm_member "$G" alice carol
CA="$(created_at_of "$OUT")"
eq "creator removes a member" "$(event "$G" 82 '"type":"member_left","user_id":"carol","sender_id":"alice"' "$CA")" "$OUT"
eq "members after removals" "$(printf 'alice\ndave\nerin')" "$(cli SMEMBERS "$(k "$G" members)" | sort)"
membership() { cli HGET "$(k "$1" membership)" "$2"; }
eq "membership records joins and leaves, oldest first" "l81|l82|j79" \
  "$(membership "$G" bob | awk '{print $NF}')|$(membership "$G" carol | awk '{print $NF}')|$(membership "$G" dave)"
match "a member made at creation was noted joined" '^j[0-9]+ l81$' "$(membership "$G" bob)"
M="${RUN}mcap"
create "$M" group "" alice alice zoe
rm_member "$M" zoe zoe
add "$M" alice 5 zoe
eq "a member added again is noted joined again" "j2 l3 j4" "$(membership "$M" zoe)"
for ((i = 0; i < 40; i++)); do
  rm_member "$M" zoe zoe
  add "$M" alice 5 zoe
done
Z="$(membership "$M" zoe)"
eq "a membership record keeps at most 64 changes, the newest, from a join, marked trimmed" "yes - j j$(seq_of "$M")" \
  "$([ "$(wc -w <<<"$Z")" -le 65 ] && [ "$(wc -w <<<"$Z")" -ge 64 ] && echo yes) $(cut -d' ' -f1 <<<"$Z") $(cut -d' ' -f2 <<<"$Z" | cut -c1) ${Z##* }"
rm_member "$G" alice carol
expect_err "remove twice" NOTFOUND
send "$G" bob m-gone 'x' c-gone
expect_err "removed member cannot send" NOTMEMBER
rm_member "$G" alice alice
expect_ok "creator leaves"
rm_member "$G" alice dave
expect_err "creator no longer a member removes no one" NOTMEMBER
rm_member "$G" dave dave
expect_ok "member leaves after the creator"
eq "seq after removals" 84 "$(seq_of "$G")"

# ---- read
read_mark "$G" erin laptop 0
eq "read 0" 0 "$OUT"
read_mark "$G" erin laptop 50
eq "read 50" 50 "$OUT"
read_mark "$G" erin laptop 10
eq "read never moves back" 50 "$OUT"
read_mark "$G" erin phone 7
eq "read is per session" 7 "$OUT"
eq "reads hash fields" "$(printf 'erin/laptop\n50\nerin/phone\n7')" "$(cli HGETALL "$(k "$G" reads)" | paste - - | sort | tr '\t' '\n')"
read_mark "$G" erin laptop 84
eq "read up to last seq" 84 "$OUT"
read_mark "$G" erin laptop 85
expect_err "read above last seq" BADSEQ
read_mark "$G" bob laptop 1
expect_err "read by non-member" NOTMEMBER
read_mark "$X" erin laptop 0
expect_err "read in unknown channel" NOTFOUND
read_mark "$G" erin laptop -1
expect_err "read negative seq" BADREQUEST
eq "refused reads leave the marker" 84 "$(cli HGET "$(k "$G" reads)" erin/laptop)"

# ---- errors arrive with their own code, not ERR-prefixed
cli --no-raw EVALSHA "${SHA[read]}" 4 "$(k "$G" meta)" "$(k "$G" members)" "$(k "$G" seq)" "$(k "$G" reads)" bob s 1 >"$TMP/raw" 2>&1
match "error reply is -NOTMEMBER <detail>" '^\(error\) NOTMEMBER [^ ]' "$(cat "$TMP/raw")"

# ---- the live topic saw every event of G as "<seq> <json>", in order
for _ in $(seq 50); do [ "$(grep -c '^smessage$' "$TMP/sub")" -ge 84 ] && break; sleep 0.1; done
kill "${SUB_PIDS[0]}" 2>/dev/null
awk '$0 == "smessage" { getline; getline; print }' "$TMP/sub" >"$TMP/live"
eq "live payload count = seqs" 84 "$(wc -l <"$TMP/live")"
eq "live payloads are <seq> <json> of the log, in order" \
  "$(cli XRANGE "$(k "$G" log)" - + | awk 'NR % 3 == 1 { id = $0; sub(/-0$/, "", id) } NR % 3 == 0 { print id " " $0 }')" \
  "$(cat "$TMP/live")"

# ---- an evicted or lagging seq key: the next seq comes from the log, never reused, never a refused XADD
E="${RUN}evict"
create "$E" group "" alice alice bob
send "$E" alice m-e1 "one" e1
eq "send before eviction is seq 3" 3 "$(seq_of "$E")"
cli DEL "$(k "$E" seq)" >/dev/null
send "$E" alice m-e2 "two" e2
expect_ok "send after the seq key vanished"
match "it continues the log (seq 4)" '"seq":4,' "$OUT"
eq "seq restored from the log" 4 "$(seq_of "$E")"
cli SET "$(k "$E" seq)" 1 >/dev/null
send "$E" alice m-e3 "three" e3
expect_ok "send with a seq key behind the log"
match "it continues the log (seq 5)" '"seq":5,' "$OUT"
eq "the log has no gap and no duplicate" "$(printf '1-0\n2-0\n3-0\n4-0\n5-0')" "$(cli XRANGE "$(k "$E" log)" - + | awk 'NR % 3 == 1')"

# ---- a log key of another type: the call fails and the seq is taken back
W="${RUN}wrongtype"
create "$W" group "" alice alice
cli DEL "$(k "$W" log)" >/dev/null
cli SET "$(k "$W" log)" "not a stream" >/dev/null
send "$W" alice m-w1 "lost" w1
expect_err "send onto a log of another type fails" WRONGTYPE
eq "the seq is taken back" 1 "$(seq_of "$W")"
cli DEL "$(k "$W" log)" >/dev/null

# ---- retention by count: the log keeps the newest N, seq goes on
for s in send channel_create members_add; do load "$s-3-0" "$s" 3 0; done
R="${RUN}rcap"
ev channel_create-3-0 6 $(base6 "$R") "$R" group "" alice "$(k "$R" live)" alice bob carol dave erin
expect_ok "create with a cap of 3 events"
eq "five joins logged, three kept" 3 "$(cli XLEN "$(k "$R" log)")"
eq "the oldest kept is seq 3" "3-0" "$(cli XRANGE "$(k "$R" log)" - + COUNT 1 | head -1)"
for i in 1 2 3 4; do
  ev send-3-0 7 $(sendkeys "$R") alice "m-rc$i" "$(msg_body "m-rc$i" alice "t$i" "rc$i")" "$R" "$(k "$R" live)" "alice:rc$i" 600
done
eq "seq never moves back" 9 "$(seq_of "$R")"
eq "the log holds seqs 7..9" "$(printf '7-0\n8-0\n9-0')" "$(cli XRANGE "$(k "$R" log)" - + | awk 'NR % 3 == 1')"
eq "trimmed messages are forgotten in msgs" "$(printf 'm-rc2\nm-rc3\nm-rc4')" "$(cli HKEYS "$(k "$R" msgs)" | sort)"

# ---- retention by age: events older than the limit go as new ones are appended
load "send-0-200" send 0 200
A="${RUN}rage"
create "$A" group "" alice alice
send "$A" alice m-a1 "old" a1
sleep 0.5
ev send-0-200 7 $(sendkeys "$A") alice m-a2 "$(msg_body m-a2 alice "new" a2)" "$A" "$(k "$A" live)" alice:a2 600
expect_ok "send with an age limit"
eq "only the new event is left" "3-0" "$(cli XRANGE "$(k "$A" log)" - + | awk 'NR % 3 == 1')"
eq "the old message is forgotten in msgs" "m-a2" "$(cli HKEYS "$(k "$A" msgs)")"
eq "seq kept" 3 "$(seq_of "$A")"

# ---- commit.lua and log_page.lua (--redis-wait): publish what replicas hold, read no further
for s in commit log_page; do
  SHA[$s]="$(cli SCRIPT LOAD "$(cat "$LUA/$s.lua")" 2>&1)"   # standalone: no prelude
  match "load $s" '^[0-9a-f]{40}$' "${SHA[$s]}"
done
C="${RUN}commit"
create "$C" group "" alice alice
for i in 1 2 3; do send "$C" alice "m-c$i" "c$i" "c$i"; done
top="$(seq_of "$C")"
ids() { awk 'NR % 3 == 1' <<<"$1" | tr '\n' ' '; }
ev log_page 2 "$(k "$C" log)" "$(k "$C" meta)" 1 100
eq "log_page without replicated_seq reads to the log's end" "$(cli XRANGE "$(k "$C" log)" - + | awk 'NR % 3 == 1' | tr '\n' ' ')" "$(ids "$OUT")"
cli SSUBSCRIBE "$(k "$C" live)" >"$TMP/csub" 2>&1 &
SUB_PIDS+=($!)
for _ in $(seq 50); do grep -q '^ssubscribe$' "$TMP/csub" 2>/dev/null && break; sleep 0.1; done
ev commit 1 "$(k "$C" meta)" "$(k "$C" live)" "$((top - 1)) {\"a\":1}" "$((top - 2)) {\"b\":2}"
eq "commit answers the highest seq given" "$((top - 1))" "$OUT"
eq "commit records it" "$((top - 1))" "$(cli HGET "$(k "$C" meta)" replicated_seq)"
ev commit 1 "$(k "$C" meta)" "$(k "$C" live)" "1 {\"c\":3}"
eq "replicated_seq never moves down" "$((top - 1))" "$OUT"
for _ in $(seq 50); do [ "$(grep -c '^smessage$' "$TMP/csub")" -ge 3 ] && break; sleep 0.1; done
eq "commit publishes every payload, in order" "$(printf '%s\n' "$((top - 1)) {\"a\":1}" "$((top - 2)) {\"b\":2}" "1 {\"c\":3}")" \
  "$(awk '$0 == "smessage" { getline; getline; print }' "$TMP/csub")"
ev log_page 2 "$(k "$C" log)" "$(k "$C" meta)" 1 100
eq "log_page stops at replicated_seq" "$(seq 1 $((top - 1)) | sed 's/$/-0/' | tr '\n' ' ')" "$(ids "$OUT")"
ev log_page 2 "$(k "$C" log)" "$(k "$C" meta)" 2 2
eq "log_page takes at most COUNT entries from the first seq" "2-0 3-0 " "$(ids "$OUT")"
ev log_page 2 "$(k "$C" log)" "$(k "$C" meta)" "$top" 100
eq "log_page past replicated_seq is empty" "" "$OUT"
send "$C" alice m-c4 "c4" c4
eq "a script that publishes at once moves replicated_seq up to its event" "$((top + 1))" "$(cli HGET "$(k "$C" meta)" replicated_seq)"
eq "and gives none to a channel that has none" 0 "$(cli HEXISTS "$(k "$G" meta)" replicated_seq)"
ev commit 1 "$(k "$X" meta)" "$(k "$X" live)" "5 {}"
eq "commit on no channel answers 0" 0 "$OUT"
eq "and makes no channel" 0 "$(cli EXISTS "$(k "$X" meta)")"

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
