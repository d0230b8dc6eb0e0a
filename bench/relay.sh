#!/usr/bin/env bash
# Relay-throughput benchmark (SPEC §4): Postfix and Tern side by side on this machine, each
# accepting 5 KiB messages from Postfix's smtp-source and relaying them to Postfix's smtp-sink.
# Both acknowledge only after fsync; both relay through a smarthost ([127.0.0.1]:2600) with at
# most 20 connections to it (Postfix's smtp_destination_concurrency_limit, Tern's
# destination_concurrency). A run is timed from the first connection of smtp-source until the
# server's queue is empty, so it covers accepting, queueing, relaying and removing.
#
#   bench/relay.sh [MESSAGES]        # default 3000 per run
#
# Writes the table to docs/performance.md (section "Relay throughput") and prints it.
# Needs root: it rewrites /etc/postfix through ../shared/bench/postfix-baseline.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
messages=${1:-3000}
baseline=${POSTFIX_BASELINE:-$root/../shared/bench/postfix-baseline.sh}
postfix_port=2526
tern_port=2527
sink_port=2600
work=$(mktemp -d /tmp/tern-relay.XXXXXX)
tern_pid="" sink_pid=""

source "$root/bench/common.sh"

cleanup() {
  stop_process "$tern_pid"
  stop_process "$sink_pid"
  "$baseline" stop || true
  rm -rf "$work"
}
trap cleanup EXIT

build_tern

echo "== starting smtp-sink on 127.0.0.1:$sink_port"
smtp-sink -u nobody 127.0.0.1:$sink_port 1000 &
sink_pid=$!

echo "== starting postfix"
"$baseline" start "$postfix_port" "$sink_port"

write_tern_config "$tern_port" "relayhost = \"[127.0.0.1]:$sink_port\"
destination_concurrency = 20
retry = [\"1s\"]"
start_tern "$tern_port"

tern_queue() { "$tern" queue list --json --config "$work/tern.toml" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }

# drained SERVER: waits until the server's queue is empty (at most 5 minutes)
drained() {
  for _ in $(seq 3000); do
    if [[ $1 == postfix ]]; then [[ $("$baseline" queue) == 0 ]] && return; else [[ $(tern_queue) == 0 ]] && return; fi
    sleep 0.1
  done
  echo "$1 did not drain its queue" >&2
  exit 1
}

# rate SERVER PORT SESSIONS COUNT → messages relayed per second
rate() {
  local start end
  start=$(date +%s.%N)
  smtp-source -s "$3" -l 5120 -m "$4" -f bench@source.test -t rcpt@sink.test "127.0.0.1:$2"
  drained "$1"
  end=$(date +%s.%N)
  echo "scale=1; $4 / ($end - $start)" | bc
}

rows=""
for sessions in 16 64; do
  rate postfix "$postfix_port" "$sessions" 200 >/dev/null   # warm-up
  rate tern "$tern_port" "$sessions" 200 >/dev/null
  sleep 1
  ps=() ts=()
  for _ in 1 2 3; do
    ps+=("$(rate postfix "$postfix_port" "$sessions" "$messages")"); sleep 1
    ts+=("$(rate tern "$tern_port" "$sessions" "$messages")"); sleep 1
  done
  p=$(median "${ps[@]}")
  t=$(median "${ts[@]}")
  ratio=$(ratio "$t" "$p")
  echo "sessions=$sessions postfix=$p/s tern=$t/s ratio=$ratio"
  rows+="| $sessions | $messages | $p | $t | ${ratio}× |"$'\n'
done

relayed=$(grep -c 'event=delivered' "$work/tern.log" || true)
table="## Relay throughput (bench/relay.sh)

Measured $(date -u +%Y-%m-%d) on $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown);
Postfix $(postconf -h mail_version) from Debian; 5 KiB messages from \`smtp-source\` (one connection per message),
relayed through the smarthost [127.0.0.1]:$sink_port (\`smtp-sink\`) with at most 20 connections to it.
A run lasts from smtp-source's start until the server's queue is empty; each figure is the median of three.
Tern relayed $relayed messages in all.

| sessions | messages | Postfix msg/s | Tern msg/s | Tern / Postfix |
|---:|---:|---:|---:|---:|
$rows
Target (SPEC §4): at least 2×.
"
publish "$table"
