#!/usr/bin/env bash
# Accept-rate benchmark (SPEC §4): Postfix and Tern side by side on this machine, each loaded
# by Postfix's own smtp-source with 5 KiB messages at 1, 16 and 64 concurrent sessions. Both
# acknowledge a message only once it is on stable storage (Postfix fsyncs each queue file;
# Tern group-commits its queue log). Postfix discards after queueing; Tern keeps the messages
# queued (its relayhost refuses connections, so each is deferred), so Tern does at least the
# same work.
#
#   bench/accept.sh [MESSAGES]        # default 3000 per run (1 session: a third of that)
#
# Writes the table to docs/performance.md (section "Accept rate") and prints it.
# Needs root: it rewrites /etc/postfix through ../shared/bench/postfix-baseline.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
messages=${1:-3000}
baseline=${POSTFIX_BASELINE:-$root/../shared/bench/postfix-baseline.sh}
postfix_port=2526
tern_port=2527
work=$(mktemp -d /tmp/tern-bench.XXXXXX)
tern_pid=""

source "$root/bench/common.sh"

cleanup() {
  stop_process "$tern_pid"
  "$baseline" stop || true
  rm -rf "$work"
}
trap cleanup EXIT

build_tern

echo "== starting postfix"
"$baseline" start "$postfix_port" discard

# This benchmark measures acceptance: the relayhost is a closed port, so each message is
# deferred after one refused connection and waits in the queue past the benchmark's end
# (bench/relay.sh measures relaying).
write_tern_config "$tern_port" 'relayhost = "[127.0.0.1]:9"
retry = ["1h"]'
start_tern "$tern_port"

# rate PORT SESSIONS COUNT → messages per second
rate() {
  local start end
  start=$(date +%s.%N)
  smtp-source -s "$2" -l 5120 -m "$3" -f bench@source.test -t rcpt@sink.test "127.0.0.1:$1"
  end=$(date +%s.%N)
  echo "scale=1; $3 / ($end - $start)" | bc
}

# Postfix goes on delivering (discarding) its backlog after smtp-source ends: let it finish,
# so that neither server's measurement carries the other's leftover work.
settle() {
  for _ in $(seq 300); do [[ $("$baseline" queue) == 0 ]] && break; sleep 0.1; done
  sleep 1
}

rows=""
for sessions in 1 16 64; do
  count=$messages
  [[ $sessions == 1 ]] && count=$((messages / 3))
  rate "$postfix_port" "$sessions" 200 >/dev/null   # warm-up
  settle
  rate "$tern_port" "$sessions" 200 >/dev/null
  settle
  ps=() ts=()
  for _ in 1 2 3; do
    ps+=("$(rate "$postfix_port" "$sessions" "$count")"); settle
    ts+=("$(rate "$tern_port" "$sessions" "$count")"); settle
  done
  p=$(median "${ps[@]}")
  t=$(median "${ts[@]}")
  ratio=$(ratio "$t" "$p")
  echo "sessions=$sessions postfix=$p/s tern=$t/s ratio=$ratio"
  rows+="| $sessions | $count | $p | $t | ${ratio}× |"$'\n'
done

acknowledged=$(grep -c 'event=queued' "$work/tern.log" || true)
table="## Accept rate (bench/accept.sh)

Measured $(date -u +%Y-%m-%d) on $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown);
Postfix $(postconf -h mail_version) from Debian; 5 KiB messages from \`smtp-source\`, one connection per message;
each figure is the median of three runs, each server's backlog drained before the next run.
Tern logged $acknowledged queued messages, every one acknowledged after its group commit.

| sessions | messages | Postfix msg/s | Tern msg/s | Tern / Postfix |
|---:|---:|---:|---:|---:|
$rows
Target (SPEC §4): at least 3× at 16 and 64 sessions.
"
publish "$table"
