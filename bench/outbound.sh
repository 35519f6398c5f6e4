#!/usr/bin/env bash
# Outbound relay benchmark (M2): postwerk vs. Postfix relaying the same load to the
# same SMTP sink (bench/sink.py on 127.0.0.9), in one run, side by side.
#
#   bench/outbound.sh [--connections 20] [--messages 100] [--size 10240] [--repeat 3]
#                     [--wait-quiet S] [--skip-peer] [--skip-postwerk] [--out DIR] [--keep]
#                     [--profile] [--postwerk-rev REV]
#
#   queue -> sink   hold the server's delivery (Postfix: defer_transports = smtp;
#                   postwerk: send connector Sink disabled, server restarted), load
#                   CONNECTIONS × MESSAGES ~SIZE-byte messages for r1..r20@remote.bench.test,
#                   wait until all are queued, release (Postfix: defer_transports empty,
#                   reload, postqueue -f; postwerk: connector set Sink --enabled), time the
#                   sink until it has them all. Rate = messages / (last - first arrival).
#   accept -> sink  sink up, delivery on: messages / (last arrival - first MAIL).
#   --repeat R      R pairs of runs per server, interleaved (Postfix, postwerk, Postfix, ...);
#                   the run with the median rate is reported, every run is kept
#   --wait-quiet S  before each measured drain/load wait (at most S s) for >= 90 % idle CPUs
#   --out DIR       results directory (default: a new $PW_BENCH_DIR/results/<timestamp>)
#   --profile       py-spy (.venv/bin/py-spy) records postwerk during its queue drains:
#                   DIR/outbound-postwerk-queue-runN.pyspy.txt (raw, --gil)
#   --postwerk-rev REV  run postwerk from `git archive REV src` (under $PW_BENCH_DIR) with
#                   the .venv's dependencies, not from the working tree (which may be mid-edit)
#   --keep          leave the servers and the sink running
#
# Needs root (private Postfix instance). Listens on 127.0.0.1 / 127.0.0.9 only:
# sink 127.0.0.9:12530 (control 12531), Postfix relay 127.0.0.1:12526, postwerk 21025.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
BASE=${PW_BENCH_DIR:-/tmp/pw-bench}
export PW_BENCH_DIR=$BASE
PY=${PYTHON:-python3}
CONNS=20
MPC=100
SIZE=10240
REPEAT=3
WAIT_QUIET=0
RUN_PEER=1
RUN_PW=1
KEEP=0
PROFILE=0
OUT=""
PW_REV=""
SINK_HOST=${PW_SINK_HOST:-127.0.0.9}
SINK_PORT=${PW_SINK_PORT:-12530}
SINK_CTL=${PW_SINK_CONTROL_PORT:-12531}
export PW_SINK_HOST=$SINK_HOST PW_SINK_PORT=$SINK_PORT PW_SINK_CONTROL_PORT=$SINK_CTL
PF_PORT=${PW_RELAY_SMTP_PORT:-12526}
PW_PORT=$((25 + ${PW_RELAY_PORT_OFFSET:-21000}))

while [[ $# -gt 0 ]]; do
    case $1 in
        --connections) CONNS=$2; shift 2 ;;
        --messages|--messages-per-connection) MPC=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        --repeat) REPEAT=$2; shift 2 ;;
        --wait-quiet) WAIT_QUIET=$2; shift 2 ;;
        --skip-peer) RUN_PEER=0; shift ;;
        --skip-postwerk) RUN_PW=0; shift ;;
        --out) OUT=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --profile) PROFILE=1; shift ;;
        --postwerk-rev) PW_REV=$2; shift 2 ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

if [[ $(id -u) -ne 0 ]]; then
    echo "bench/outbound.sh needs root (private postfix instance)" >&2
    exit 1
fi
say() { echo "== $*" >&2; }

if [[ -z $OUT ]]; then
    OUT=$BASE/results/$(date +%Y%m%d-%H%M%S)-outbound
    mkdir -p "$OUT"
    ln -sfn "$OUT" "$BASE/results/latest-outbound"
fi
mkdir -p "$OUT"
ENV=$OUT/outbound-env.txt

if [[ -n $PW_REV ]]; then
    sha=$(git -C "$REPO" rev-parse --short=12 "$PW_REV^{commit}")
    SNAP=$BASE/postwerk-src-$sha
    if [[ ! -d $SNAP/src/postwerk ]]; then
        mkdir -p "$SNAP"
        git -C "$REPO" archive "$sha" src | tar -x -C "$SNAP"
    fi
    export POSTWERK="env PYTHONPATH=$SNAP/src $REPO/.venv/bin/postwerk"
    PW_VERSION="commit $sha (git archive, $SNAP)"
else
    dirty=$(git -C "$REPO" status --porcelain -- src 2>/dev/null | wc -l)
    PW_VERSION="working tree at $(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null), $dirty changed files under src/"
fi

PFR="bash $HERE/peers/postfix_relay.sh"
PWR="bash $HERE/peers/postwerk_relay.sh"

# ---------------------------------------------------------------- the sink
SINK_PID=""
sink_up() { $PY "$HERE/sink.py" stats >/dev/null 2>&1; }
if sink_up; then
    say "sink already running on $SINK_HOST:$SINK_PORT"
else
    setsid $PY "$HERE/sink.py" serve --pid-file "$BASE/sink.pid" >"$BASE/sink.log" 2>&1 </dev/null &
    SINK_PID=$!
    for _ in $(seq 1 50); do sink_up && break; sleep 0.1; done
    sink_up || { cat "$BASE/sink.log" >&2; exit 1; }
fi

cleanup() {
    if [[ $KEEP == 0 ]]; then
        $PWR stop 2>/dev/null || true
        $PFR stop 2>/dev/null || true
        if [[ -n $SINK_PID ]]; then kill -TERM "$SINK_PID" 2>/dev/null || true; fi
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

RCPTS=()
for i in $(seq 1 20); do RCPTS+=(--rcpt "r$i@remote.bench.test"); done
LOAD=(--connections "$CONNS" --messages-per-connection "$MPC" --size "$SIZE" "${RCPTS[@]}")
WARM=(--connections "$CONNS" --messages-per-connection 5 --size "$SIZE" "${RCPTS[@]}")

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -srm), $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "fs: $(df -T "$BASE" | awk 'NR==2{print $2" on "$1}')"
    echo "outbound load: $CONNS connections × $MPC messages, ~$SIZE bytes, 20 recipients @remote.bench.test"
    echo "sink: $SINK_HOST:$SINK_PORT (bench/sink.py)"
    echo "postwerk: $PW_VERSION, delivery_processes ${PW_DELIVERY_PROCESSES:-$(nproc)} (server CPU below: the main process only)"
    echo "postfix: $(dpkg-query -W -f '${Version}' postfix 2>/dev/null || echo '?')"
    echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >>"$ENV"

# ---------------------------------------------------------------- servers up
if [[ $RUN_PEER == 1 ]]; then
    say "Postfix relay: starting (127.0.0.1:$PF_PORT -> [$SINK_HOST]:$SINK_PORT)"
    $PFR start
    rm -f "$BASE/postfix-relay/hold"; $PFR release >/dev/null 2>&1 || true
    $PFR purge
fi
if [[ $RUN_PW == 1 ]]; then
    if ! $PWR check 2>/dev/null; then
        say "postwerk: SKIPPED -- $(${POSTWERK:-$REPO/.venv/bin/postwerk} --version 2>&1 | head -1) has no send connectors"
        RUN_PW=0
    else
        say "postwerk relay: starting (127.0.0.1:$PW_PORT -> Sink [$SINK_HOST]:$SINK_PORT)"
        $PWR start
        $PWR release   # Sink enabled (a previous run may have left it disabled)
    fi
fi

warmup() {  # warmup LABEL PORT: 20 × 5 messages through, sink up
    $PY "$HERE/outbound.py" e2e --label "warmup-$1" -- --port "$2" "${WARM[@]}" >/dev/null \
        || say "$1 warm-up incomplete"
}
if [[ $RUN_PEER == 1 ]]; then say "Postfix relay: warm-up"; warmup postfix "$PF_PORT"; fi
if [[ $RUN_PW == 1 ]]; then
    # wait for the Sink connector to be routable again (connector cache + reroute, <= ~10 s)
    sleep 11
    say "postwerk relay: warm-up"; warmup postwerk "$PW_PORT"
fi

show() {  # show FILE: one line per run
    $PY - "$1" <<'EOF' >&2 || true
import json, sys
d = json.load(open(sys.argv[1]))
s = d["sink"]
if d["mode"] == "queue":
    print("   %-8s queue->sink %7.1f/s  release->last %6.1f/s  release->first %5.2fs  "
          "conns %4s  peak %2s  complete %s" % (d["label"], d["queue_to_sink_per_s"],
          d["release_to_last_per_s"], d["release_to_first_s"] if d["release_to_first_s"] is not None
          else float("nan"), s["connections"],
          s["peak_open"], d["complete"]))
else:
    lag = d["lag_after_last_accept_s"]
    print("   %-8s accept->sink %7.1f/s  accepted %6.1f/s  sink lag %5.2fs  conns %4s  complete %s"
          % (d["label"], d["accept_to_sink_per_s"], d["accepted_per_s"] or 0,
             lag if lag is not None else float("nan"), s["connections"], d["complete"]))
EOF
}

queue_run() {  # queue_run WHO RUN
    local who=$1 i=$2 f=$OUT/outbound-$1-queue-run$2.json extra=()
    if [[ $who == postfix ]]; then
        $PY "$HERE/outbound.py" queue --label postfix --out "$f" --wait-quiet "$WAIT_QUIET" \
            --hold-cmd "$PFR hold" --queued-cmd "$PFR deferred" --release-cmd "$PFR release" \
            -- --port "$PF_PORT" "${LOAD[@]}" >/dev/null \
            || say "postfix queue run $i incomplete (see $f)"
    else
        if [[ $PROFILE == 1 ]]; then
            extra=(--pyspy "$REPO/.venv/bin/py-spy" --pyspy-gil
                   --pyspy-out "$OUT/outbound-postwerk-queue-run$i.pyspy.txt")
        fi
        $PY "$HERE/outbound.py" queue --label postwerk --out "$f" --wait-quiet "$WAIT_QUIET" \
            --hold-cmd "$PWR hold" --queued-cmd "$PWR queued" --release-cmd "$PWR release" \
            --pid-cmd "$PWR pid" "${extra[@]}" -- --port "$PW_PORT" "${LOAD[@]}" >/dev/null \
            || say "postwerk queue run $i incomplete (see $f)"
    fi
    [[ -s $f ]] && show "$f"
    echo "$who queue run $i: loadavg $(cut -d' ' -f1-3 /proc/loadavg)" >>"$ENV"
}

e2e_run() {  # e2e_run WHO RUN
    local who=$1 i=$2 f=$OUT/outbound-$1-e2e-run$2.json port pidcmd=""
    # server CPU only for postwerk: Postfix is many short-lived processes (machine CPU covers it)
    if [[ $who == postfix ]]; then port=$PF_PORT; else port=$PW_PORT; pidcmd="$PWR pid"; fi
    $PY "$HERE/outbound.py" e2e --label "$who" --out "$f" --wait-quiet "$WAIT_QUIET" \
        --pid-cmd "$pidcmd" -- --port "$port" "${LOAD[@]}" >/dev/null \
        || say "$who e2e run $i incomplete (see $f)"
    [[ -s $f ]] && show "$f"
    echo "$who e2e run $i: loadavg $(cut -d' ' -f1-3 /proc/loadavg)" >>"$ENV"
}

say "outbound: $CONNS × $MPC messages per run, $REPEAT runs per server and mode"
for i in $(seq 1 "$REPEAT"); do
    [[ $RUN_PEER == 1 ]] && queue_run postfix "$i"
    [[ $RUN_PW == 1 ]] && queue_run postwerk "$i"
    # postwerk's hold restarted it with Sink disabled; queue_run's release re-enabled it
    [[ $RUN_PEER == 1 ]] && e2e_run postfix "$i"
    [[ $RUN_PW == 1 ]] && e2e_run postwerk "$i"
done

for who in postfix postwerk; do
    for mode in queue e2e; do
        mapfile -t files < <(ls "$OUT"/outbound-$who-$mode-run*.json 2>/dev/null)
        [[ ${#files[@]} -gt 0 ]] || continue
        $PY "$HERE/outbound.py" pick "$OUT/outbound-$who-$mode.json" "${files[@]}" || true
    done
done

echo
echo "Outbound results: $OUT"
$PY "$HERE/outbound.py" report "$OUT" | tee "$OUT/outbound-summary.txt"
