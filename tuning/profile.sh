#!/usr/bin/env bash
# Profiles a running `tidewater serve` under load: a CPU flame graph of the steady
# state and the server's CPU cost per event.
#
#   tuning/profile.sh [--pid PID] [--seconds N] [--out DIR] [--brokers HOST:PORT]
#                     [--warmup N] [--call-graph dwarf|fp] [--loadgen-cpus LIST]
#                     [--no-loadgen] [-- LOADGEN FLAGS...]
#
# What it does:
#   1. finds the server (--pid, or the one process running `tidewater serve`);
#   2. starts `tidewater loadgen --brokers B --duration WARMUP+N+1s --report ...`
#      (the server's own binary, so both are the same version; flags after `--` go
#      to the load generator, e.g. -- --rate 200000 --batch-events 50);
#   3. counts the server's task-clock, context switches, migrations and page faults
#      with `perf stat` for the whole load run, so every event the load generator
#      reports falls inside the count;
#   4. samples the server with `perf record -F 999 -g` for N seconds after the
#      warm-up, folds the stacks with inferno-collapse-perf and draws
#      flamegraph.svg with inferno-flamegraph;
#   5. prints task-clock per acknowledged event (and CPU seconds per million events,
#      the unit of docs/benchmarks.md).
#
# Run as root (perf attaching to another user's process). Output: DIR (default
# ./profile-YYYYmmdd-HHMMSS) with perf.data, perf.folded, flamegraph.svg,
# perf-stat.txt, loadgen.json, loadgen.log.
#
# Without hardware counters (most VMs; perf says `<not supported>` for cycles),
# sampling uses the cpu-clock software event instead of cycles.
# Call graphs: dwarf by default, because release builds carry no frame pointers;
# it copies 8 KiB of stack per sample, so perf.data grows by about
# 8 MiB per core per second at 999 Hz. --call-graph fp is compact but only correct
# for a build with -C force-frame-pointers=yes.
set -euo pipefail

PID=""
SECONDS_PROFILED=30
WARMUP=5
OUT=""
BROKERS=127.0.0.1:9092
CALL_GRAPH=dwarf
LOADGEN_CPUS=""
LOADGEN=1
LOADGEN_ARGS=()

usage() { sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//;p;}' "$0"; exit "${1:-2}"; }
die() { echo "profile: $*" >&2; exit 1; }
say() { echo "profile: $*" >&2; }

while (($#)); do
  case $1 in
    --pid) PID=${2:?}; shift ;;
    --seconds) SECONDS_PROFILED=${2:?}; shift ;;
    --warmup) WARMUP=${2:?}; shift ;;
    --out) OUT=${2:?}; shift ;;
    --brokers) BROKERS=${2:?}; shift ;;
    --call-graph) CALL_GRAPH=${2:?}; shift ;;
    --loadgen-cpus) LOADGEN_CPUS=${2:?}; shift ;;
    --no-loadgen) LOADGEN=0 ;;
    --) shift; LOADGEN_ARGS=("$@"); break ;;
    -h|--help) usage 0 ;;
    *) echo "profile: unknown argument $1" >&2; usage ;;
  esac
  shift
done
[[ $SECONDS_PROFILED =~ ^[0-9]+$ && $SECONDS_PROFILED -gt 0 ]] || die "--seconds must be a positive whole number"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "--warmup must be a whole number"
[[ $CALL_GRAPH == dwarf || $CALL_GRAPH == fp ]] || die "--call-graph must be dwarf or fp"

# --- the server ---------------------------------------------------------------------
if [[ -z $PID ]]; then
  # The full command line: `tidewater loadgen` is the same binary.
  mapfile -t pids < <(pgrep -f '(^|/)tidewater serve( |$)' || true)
  ((${#pids[@]} == 1)) || die "found ${#pids[@]} 'tidewater serve' processes (${pids[*]:-}); pass --pid"
  PID=${pids[0]}
fi
[[ -d /proc/$PID ]] || die "no process $PID"
TIDEWATER=$(readlink -f "/proc/$PID/exe") || die "cannot read /proc/$PID/exe (run as root)"
say "server pid $PID ($TIDEWATER)"

# --- tools --------------------------------------------------------------------------
command -v perf >/dev/null 2>&1 || die "perf is not installed (Debian: apt-get install linux-perf)"
for tool in inferno-collapse-perf inferno-flamegraph; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    [[ -x $HOME/.cargo/bin/$tool ]] && { PATH=$HOME/.cargo/bin:$PATH; continue; }
    command -v cargo >/dev/null 2>&1 || die "$tool is missing and so is cargo: install Rust, then: cargo install inferno"
    say "installing inferno (cargo install --locked inferno)"
    cargo install --locked inferno >&2
    PATH=$HOME/.cargo/bin:$PATH
  fi
done

OUT=${OUT:-profile-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

# cycles when the CPU exposes them to perf, else the cpu-clock software event.
if perf stat -e cycles -x, -- true 2>&1 | grep -q '<not supported>\|not supported\|<not counted>'; then
  EVENT=cpu-clock
  STAT_EVENTS=task-clock,context-switches,cpu-migrations,page-faults,cpu-clock
  say "no hardware counters here: sampling cpu-clock"
else
  EVENT=cycles
  STAT_EVENTS=task-clock,context-switches,cpu-migrations,page-faults,cycles,instructions
fi

cleanup() {
  local p
  for p in ${STAT_PID:-} ${LOADGEN_PID:-}; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# --- the run ------------------------------------------------------------------------
perf stat -e "$STAT_EVENTS" -p "$PID" -o "$OUT/perf-stat.txt" &
STAT_PID=$!

if ((LOADGEN)); then
  duration=$((WARMUP + SECONDS_PROFILED + 1))
  pin=()
  [[ -n $LOADGEN_CPUS ]] && pin=(taskset -c "$LOADGEN_CPUS")
  say "load: tidewater loadgen --brokers $BROKERS --duration ${duration}s ${LOADGEN_ARGS[*]:-}"
  "${pin[@]}" "$TIDEWATER" loadgen --brokers "$BROKERS" --duration "${duration}s" \
    --report "$OUT/loadgen.json" --quiet "${LOADGEN_ARGS[@]}" >"$OUT/loadgen.log" 2>&1 &
  LOADGEN_PID=$!
  sleep "$WARMUP"
  kill -0 "$LOADGEN_PID" 2>/dev/null || { cat "$OUT/loadgen.log" >&2; die "the load generator ended early"; }
fi

say "recording $SECONDS_PROFILED s ($EVENT, call graph $CALL_GRAPH)"
perf record -F 999 -e "$EVENT" -g --call-graph "$CALL_GRAPH" -p "$PID" -o "$OUT/perf.data" \
  -- sleep "$SECONDS_PROFILED" 2>"$OUT/perf-record.log" || { cat "$OUT/perf-record.log" >&2; die "perf record failed"; }

if ((LOADGEN)); then
  loadgen_status=0
  wait "$LOADGEN_PID" || loadgen_status=$?
  LOADGEN_PID=""
  cat "$OUT/loadgen.log" >&2
  ((loadgen_status == 0)) || say "WARNING: the load generator exited with $loadgen_status (errors in its report)"
fi
kill -INT "$STAT_PID" 2>/dev/null || true
wait "$STAT_PID" 2>/dev/null || true
STAT_PID=""

say "folding stacks (perf script is slow with dwarf call graphs)"
perf script -i "$OUT/perf.data" 2>/dev/null | inferno-collapse-perf >"$OUT/perf.folded"
inferno-flamegraph --title "tidewater serve, $SECONDS_PROFILED s, $EVENT" <"$OUT/perf.folded" >"$OUT/flamegraph.svg"

# --- the numbers --------------------------------------------------------------------
cat "$OUT/perf-stat.txt"
# perf stat's human format: "   1,234.56 msec task-clock   #  1.23 CPUs utilized".
task_clock_ms=$(awk '/msec[ \t]+task-clock/ && $1 ~ /^[0-9.,]+$/ { gsub(",", "", $1); print $1; exit }' "$OUT/perf-stat.txt")
if ((LOADGEN)) && [[ -s $OUT/loadgen.json && -n $task_clock_ms ]]; then
  python3 - "$OUT/loadgen.json" "$task_clock_ms" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
task_clock_ms = float(sys.argv[2])
acked = report.get("acked", 0)
print("events acked: %d in %.1f s (%.0f events/s)" % (acked, report.get("seconds", 0), report.get("events_per_sec", 0)))
if acked:
    per_event_us = task_clock_ms * 1000.0 / acked
    print("server task-clock per event: %.3f us (%.3f CPU s per million events)" % (per_event_us, per_event_us))
EOF
fi
say "flame graph: $OUT/flamegraph.svg; samples: $OUT/perf.data"
