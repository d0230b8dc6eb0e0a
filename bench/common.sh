# The set-up the bench scripts share. Sourced after they set `root` (the package) and `work`
# (a scratch directory they remove at exit).

command -v smtp-source >/dev/null || PATH=$PATH:/usr/sbin

# Builds the release binary; sets `tern`.
build_tern() {
  echo "== building tern (release)"
  swift build -c release --product tern >/dev/null
  tern=$root/.build/release/tern
}

# write_tern_config PORT DELIVERY_LINES: $work/tern.toml for a Tern on 127.0.0.1:PORT that
# lets loopback clients relay, with these lines in its [delivery] table.
write_tern_config() {
  cat >"$work/tern.toml" <<TOML
hostname = "tern.bench.test"
data_dir = "$work/data"
[listen]
smtp = ["127.0.0.1:$1"]
[relay]
trusted_networks = ["127.0.0.0/8"]
[limits]
max_connections_per_ip = 1000
[delivery]
$2
[[domains]]
name = "tern.bench.test"
mailboxes = ["postmaster"]
TOML
}

# start_tern PORT: runs `tern serve` on $work/tern.toml, its log appended to $work/tern.log,
# and waits until it listens on PORT (up to 5 minutes: recovering a large queue takes a while);
# sets `tern_pid`.
start_tern() {
  "$tern" serve --config "$work/tern.toml" 2>>"$work/tern.log" &
  tern_pid=$!
  for _ in $(seq 3000); do ss -ltn | grep -q "127.0.0.1:$1 " && return; sleep 0.1; done
  echo "tern did not start listening on 127.0.0.1:$1" >&2
  exit 1
}

# stop_process PID: ends a background process, if there is one.
stop_process() {
  [[ -n $1 ]] && kill "$1" 2>/dev/null && wait "$1" 2>/dev/null || true
}
