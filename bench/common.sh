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

# median A B C: the middle one of three numbers.
median() { printf '%s\n' "$@" | sort -n | sed -n 2p; }

# ratio TERN POSTFIX: TERN / POSTFIX with two decimals.
ratio() { printf "%.2f" "$(echo "scale=4; $1 / $2" | bc)"; }

# publish TABLE: prints TABLE and puts it in docs/performance.md in place of the section with
# the same "## " heading (its first line), or at the end if there is none yet.
publish() {
  echo "$1"
  python3 - "$root/docs/performance.md" "$1" <<'PY'
import re, sys
path, table = sys.argv[1], sys.argv[2]
try:
    text = open(path).read()
except FileNotFoundError:
    text = "# Performance\n\nHow to reproduce: see the scripts in bench/.\n\n"
heading = table.strip().splitlines()[0]
section = re.compile(re.escape(heading) + r".*?(?=\n## |\Z)", re.S)
text = section.sub(lambda _: table.strip() + "\n", text) if section.search(text) else text.rstrip() + "\n\n" + table
open(path, "w").write(text)
PY
}
