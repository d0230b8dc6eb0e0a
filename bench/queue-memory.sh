#!/usr/bin/env bash
# Queue memory benchmark (SPEC §4: "a queue of 1,000,000 messages does not grow memory beyond
# a fixed bound"). Fills a Tern queue with MESSAGES messages that cannot be delivered (the
# relayhost is a closed port, so each is tried once and deferred for an hour) and samples the
# server's resident memory as the queue grows, then restarts Tern on the full queue and samples
# it again after recovery.
#
#   bench/queue-memory.sh [MESSAGES] [STEPS]    # default 1000000 messages in 10 steps
#
# Needs about 6 GB of free disk per million 5 KiB messages under /tmp. Prints a table and
# writes it to docs/performance.md (section "Queue memory").
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
messages=${1:-1000000}
steps=${2:-10}
port=2529
work=$(mktemp -d /tmp/tern-memory.XXXXXX)
tern_pid=""

source "$root/bench/common.sh"

cleanup() {
  stop_process "$tern_pid"
  rm -rf "$work"
}
trap cleanup EXIT

build_tern
write_tern_config "$port" 'relayhost = "[127.0.0.1]:9"
retry = ["1h"]'

# Resident and peak resident memory of the server, in MiB.
memory() {
  awk '/^VmRSS/{rss=$2} /^VmHWM/{hwm=$2} END{printf "%.1f %.1f", rss/1024, hwm/1024}' "/proc/$tern_pid/status"
}

# Waits until every message the server acknowledged has had its first (failed) attempt.
settle() {
  local want=$1
  for _ in $(seq 600); do
    [[ $(grep -c 'event=deferred' "$work/tern.log" || true) -ge $want ]] && break
    sleep 1
  done
  sleep 2
}

start_tern "$port"
rows=""
queued=0
per_step=$((messages / steps))
for step in $(seq "$steps"); do
  start=$(date +%s.%N)
  smtp-source -s 64 -l 5120 -m "$per_step" -f bench@source.test -t rcpt@remote.test "127.0.0.1:$port"
  end=$(date +%s.%N)
  queued=$((queued + per_step))
  settle "$queued"
  read -r rss hwm <<<"$(memory)"
  rate=$(echo "scale=0; $per_step / ($end - $start)" | bc)
  echo "queued=$queued rss=${rss}MiB peak=${hwm}MiB accept=${rate}/s"
  rows+="| $queued | $rss | $hwm | $rate |"$'\n'
done
index=$(du -m "$work/data/queue/index" | cut -f1)
log=$(du -sm "$work/data/queue/log" | cut -f1)

stop_process "$tern_pid"
start=$(date +%s.%N)
start_tern "$port"
end=$(date +%s.%N)
read -r rss hwm <<<"$(memory)"
reopen=$(printf "%.1f" "$(echo "$end - $start" | bc)")
echo "after restart: rss=${rss}MiB peak=${hwm}MiB, listening after ${reopen}s"

table="## Queue memory (bench/queue-memory.sh)

Measured $(date -u +%Y-%m-%d) on $(nproc) cores, commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown).
5 KiB messages from \`smtp-source\` (64 sessions) to a remote domain whose relayhost refuses
connections: each message is tried once and deferred for an hour, so the queue only grows.
Resident memory of the \`tern serve\` process after each step (peak: VmHWM so far).

| messages queued | RSS MiB | peak RSS MiB | accept msg/s in the step |
|---:|---:|---:|---:|
$rows
After a restart on the full queue (log ${log} MiB, index file ${index} MiB): RSS ${rss} MiB, peak
${hwm} MiB, listening ${reopen} s after start (recovery replays the whole log).

Target (SPEC §4): memory does not grow with the queue.
"
publish "$table"
