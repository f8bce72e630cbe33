#!/usr/bin/env bash
# prober.sh measures how long a vWire carries nothing while the mesh heals: it pings across the
# vWire every 10 ms from a pod's network namespace while an example breaks a part of the mesh,
# and then reports the loss window, the longest time without a reply, and how many pings were
# lost. Each example step is a bash of its own, so the ping runs in the background between
# `start` and `stop`, its process and output kept in $VWIRE_PROBER_DIR/NAME.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=${VWIRE_PROBER_DIR:-/tmp/vwire-prober}
# A vWire that works answers every 10 ms: a vWire that gave no answer in the last second before
# `stop` never came back.
back_within=1.0

usage() {
  cat >&2 <<EOF
usage: $0 start NAME NAMESPACE LABEL-SELECTOR ADDRESS
       $0 stop NAME
       $0 clean NAME
       $0 report PING-OUTPUT [END]

start   pings ADDRESS every 10 ms (ping -D -O -i 0.01) from the network namespace of the first
        pod in NAMESPACE that LABEL-SELECTOR matches (podnet.sh), in the background, and returns
        once the first reply came (at most 10 s). Its output and pid are in $root/NAME
        (VWIRE_PROBER_DIR). A prober of the same NAME still running is stopped first.
stop    stops the ping of NAME and reports (below).
clean   stops the ping of NAME if it still runs and removes its folder, reporting nothing: an
        example's cleanup, which runs also when a step before stop failed.
report  reads the output of ping -D; END is when the record ended (seconds since the epoch,
        as ping -D prints them; default: its last timestamp). Prints the loss window (the
        longest time between two replies), the pings lost in it and in all, and fails (exit 1)
        when no reply came in the last $back_within s before END: the vWire never came back.
EOF
  exit 2
}

fail() {
  echo "$0: $*" >&2
  exit 1
}

# valid_name refuses a NAME that would leave $root.
valid_name() {
  [[ $1 =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || fail "NAME \"$1\": use letters, digits, '.', '_' and '-' (it names the folder $root/NAME)"
}

# ping_pid prints the pid kept in $1/pid if that process is still the ping started there.
ping_pid() {
  local pid
  pid=$(cat "$1/pid" 2>/dev/null) || return 0
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = ping ] && echo "$pid"
  return 0
}

# halt stops the ping of folder $1, if it still runs, waiting up to 5 s for it to end.
halt() {
  local pid
  pid=$(ping_pid "$1")
  rm -f "$1/pid"
  [ -n "$pid" ] || return 0
  kill -INT "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
}

start() {
  [ $# -eq 4 ] || usage
  local name=$1 ns=$2 selector=$3 addr=$4
  valid_name "$name"
  local dir=$root/$name
  if [ -d "$dir" ]; then
    halt "$dir"
    rm -rf "$dir"
  fi
  mkdir -p "$dir"
  "$here/podnet.sh" "$ns" "$selector" ping -D -O -i 0.01 -W 1 "$addr" >"$dir/ping.log" 2>&1 &
  echo $! >"$dir/pid"
  for _ in $(seq 200); do
    if grep -q ' bytes from ' "$dir/ping.log"; then
      echo "prober $name: pinging $addr from $selector in $ns every 10 ms (pid $(cat "$dir/pid"), output $dir/ping.log)"
      return 0
    fi
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      rm -f "$dir/pid"
      fail "prober $name: ping of $addr from $selector in $ns ended before any reply:
$(tail -n 5 "$dir/ping.log")"
    fi
    sleep 0.05
  done
  halt "$dir"
  fail "prober $name: no reply from $addr to $selector in $ns within 10 s: is the vWire up? Last lines of ping:
$(tail -n 5 "$dir/ping.log")"
}

stop() {
  [ $# -eq 1 ] || usage
  local name=$1
  valid_name "$name"
  local dir=$root/$name
  [ -f "$dir/ping.log" ] || fail "prober $name: no output in $dir: run \"$0 start $name ...\" first"
  if [ -f "$dir/pid" ]; then
    [ -n "$(ping_pid "$dir")" ] || fail "prober $name: its ping ended before stop; last lines:
$(tail -n 5 "$dir/ping.log")"
    date +%s.%N >"$dir/end"
    halt "$dir"
  fi
  # Run again (a step tried again), stop reports the same record.
  echo -n "prober $name: "
  report "$dir/ping.log" "$(cat "$dir/end" 2>/dev/null)"
}

clean() {
  [ $# -eq 1 ] || usage
  valid_name "$1"
  halt "$root/$1"
  rm -rf "${root:?}/$1"
}

report() {
  [ $# -eq 1 ] || [ $# -eq 2 ] || usage
  local log=$1 end=${2:-}
  [ -r "$log" ] || fail "report: cannot read the ping output $log"
  [ -z "$end" ] || [[ $end =~ ^[0-9]+(\.[0-9]+)?$ ]] || fail "report: END \"$end\" is not seconds since the epoch, e.g. 1700000000.25"
  awk -v end="$end" -v back="$back_within" -v file="$log" '
    # A line of ping -D starts with its time: "[1700000000.123456] ...".
    match($0, /^\[[0-9]+(\.[0-9]+)?\] /) {
      t = substr($0, 2, RLENGTH - 3) + 0
      last = t
      if ($0 !~ / bytes from / || $0 ~ /\(DUP!\)/) next
      if (!match($0, /icmp_seq=[0-9]+/)) next
      seq = substr($0, RSTART + 9, RLENGTH - 9) + 0
      if (seq > 65535) next
      # icmp_seq counts to 65535 and starts again at 0.
      while (seq + wrap < top - 32768) wrap += 65536
      seq += wrap
      if (replies == 0) { first = seq; t0 = t }
      else if (t - tr > gap) { gap = t - tr; from = tr; to = t; lostin = seq - seqr - 1 }
      if (!(seq in got)) { got[seq] = 1; distinct++ }
      if (seq > top || replies == 0) top = seq
      replies++; tr = t; seqr = seq
    }
    END {
      if (replies == 0) {
        print "no reply at all in " file ": was the vWire up when the prober started?" > "/dev/stderr"
        exit 1
      }
      if (end == "") end = last
      if (end - tr > back) {
        printf "no reply in the last %.1f s before the end (the last at %.6f, icmp_seq %d, after %d replies): the vWire never came back\n", end - tr, tr, seqr % 65536, distinct > "/dev/stderr"
        exit 1
      }
      if (lostin < 0) lostin = 0
      # The time resolution: how often ping sent (it sends less often than asked when busy).
      every = top > first ? (tr - t0) / (top - first) * 1000 : 0
      printf "loss window %.3f s (%d lost in it, %d lost in all), %d replies in %.1f s, one sent every %d ms\n", gap, lostin, top - first + 1 - distinct, distinct, tr - t0, every + 0.5
    }' "$log"
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case $cmd in
  start) start "$@" ;;
  stop) stop "$@" ;;
  clean) clean "$@" ;;
  report) report "$@" ;;
  *) usage ;;
esac
