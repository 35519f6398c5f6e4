#!/usr/bin/env bash
# The benchmark `make bench` runs: the same SMTP load against Postfix -> Dovecot LMTP
# and against postwerk, one after the other on this machine, then a side-by-side table.
#
#   bench/run.sh [--connections 20] [--messages 100] [--size 10240] [--idle-connections 50]
#                [--repeat 3] [--mailbox-size] [--prefill 100000] [--skip-peer] [--skip-postwerk] [--keep]
#                [--skip-outbound | --outbound-only] [--postwerk-rev REV]
#
#   --messages N        messages per connection (default 100: 20 × 100 = 2000 messages)
#   --repeat R          load runs per server; the run with the median delivered/s is reported
#   --wait-quiet S      before each run wait (at most S seconds) until the CPUs are >= 90% idle
#                       for 3 s, so other work on a shared machine skews the figures less
#   --mailbox-size      also run bench/mailbox_size.sh (delivery into a 100,000-message mailbox)
#   --keep              leave the servers running at the end
#   --skip-outbound     skip bench/outbound.sh (relay to an SMTP sink vs. a Postfix relay; run by default)
#   --outbound-only     only bench/outbound.sh (with the same --repeat/--wait-quiet/load options)
#   --postwerk-rev REV  outbound only: run postwerk from `git archive REV` instead of the working tree
# Results (JSON + summary.txt) go to $PW_BENCH_DIR/results/<timestamp>/ (default /tmp/pw-bench).
# Needs root (Postfix/Dovecot are installed with apt and run as private instances).
# Everything listens on loopback only: Postfix 12525, Dovecot LMTP 12424, postwerk 20025;
# outbound: sink 127.0.0.9:12530, Postfix relay 127.0.0.1:12526, postwerk relay 127.0.0.1:21025.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
BASE=${PW_BENCH_DIR:-/tmp/pw-bench}
export PW_BENCH_DIR=$BASE
CONNS=20
MPC=100
SIZE=10240
IDLE=50
MAILBOX=0
PREFILL=100000
RUN_PEER=1
RUN_PW=1
KEEP=0
RUN_OUT=1
RUN_IN=1
PW_REV=""
REPEAT=3
WAIT_QUIET=0
PY=${PYTHON:-python3}
PW_OFFSET=${PW_POSTWERK_PORT_OFFSET:-20000}
export PW_POSTWERK_PORT_OFFSET=$PW_OFFSET
NUSERS=${PW_BENCH_USERS:-20}
DOMAIN=${PW_BENCH_DOMAIN:-bench.test}

while [[ $# -gt 0 ]]; do
    case $1 in
        --connections) CONNS=$2; shift 2 ;;
        --messages|--messages-per-connection) MPC=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        --idle-connections) IDLE=$2; shift 2 ;;
        --mailbox-size) MAILBOX=1; shift ;;
        --prefill) PREFILL=$2; shift 2 ;;
        --skip-peer) RUN_PEER=0; shift ;;
        --skip-postwerk) RUN_PW=0; shift ;;
        --keep) KEEP=1; shift ;;
        --repeat) REPEAT=$2; shift 2 ;;
        --wait-quiet) WAIT_QUIET=$2; shift 2 ;;
        --skip-outbound) RUN_OUT=0; shift ;;
        --outbound-only) RUN_IN=0; MAILBOX=0; shift ;;
        --postwerk-rev) PW_REV=$2; shift 2 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

if [[ $(id -u) -ne 0 ]]; then
    echo "bench/run.sh needs root (apt-get install, private postfix/dovecot instances)" >&2
    exit 1
fi

STAMP=$(date +%Y%m%d-%H%M%S)
OUT=$BASE/results/$STAMP
mkdir -p "$OUT"
ln -sfn "$OUT" "$BASE/results/latest"
say() { echo "== $*" >&2; }

busy_check() {  # the benchmark needs a quiet machine: warn (and record) if it is not
    local la
    la=$(cut -d' ' -f1 /proc/loadavg)
    echo "loadavg before $1: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"
    if awk -v l="$la" 'BEGIN{exit !(l > 0.7)}'; then
        say "WARNING: load average is $la before $1 -- other work on this machine will skew the figures"
        ps -eo pcpu,pid,comm --sort=-pcpu | awk 'NR>1 && $1>10' | head -5 | sed 's/^/   busy: /' >&2
    fi
}

# run_load LABEL OUTFILE COUNTER... -- LOADARGS...: REPEAT runs, keep the median one
run_load() {
    local label=$1 outfile=$2; shift 2
    local i f files=()
    for i in $(seq 1 "$REPEAT"); do
        f=${outfile%.json}-run$i.json
        if [[ $WAIT_QUIET != 0 ]]; then
            echo "$label run $i: $($PY "$HERE/quiet.py" --max-wait "$WAIT_QUIET")" >>"$OUT/env.txt"
        fi
        $PY "$HERE/e2e.py" --label "$label" --out "$f" "$@" >/dev/null \
            || say "$label run $i incomplete (see $f)"
        [[ -s $f ]] || continue
        files+=("$f")
        $PY -c 'import json,sys; d=json.load(open(sys.argv[1])); print("   run %s: accepted %.1f/s  delivered %.1f/s  p99 %s ms" % (sys.argv[2], d["accepted_per_s"], d["delivered_per_s"], d["p99_ms"]))' "$f" "$i" >&2 || true
    done
    [[ ${#files[@]} -gt 0 ]] || return 1
    $PY -c '
import json, shutil, sys
out, files = sys.argv[1], sys.argv[2:]
runs = sorted((json.load(open(f))["delivered_per_s"], f) for f in files)
shutil.copy(runs[len(runs) // 2][1], out)
' "$outfile" "${files[@]}"
}

cleanup() {
    if [[ $KEEP == 0 ]]; then
        bash "$HERE/peers/postwerk.sh" stop || true
        bash "$HERE/peers/postfix_dovecot.sh" stop || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

RCPTS=()
MAILDIRS=()
for i in $(seq 1 "$NUSERS"); do
    RCPTS+=(--rcpt "u$i@$DOMAIN")
    MAILDIRS+=(--maildir "$BASE/mail/u$i/Maildir")
done
LOAD=(--connections "$CONNS" --messages-per-connection "$MPC" --size "$SIZE" "${RCPTS[@]}")
WARM=(--connections "$CONNS" --messages-per-connection 5 --size "$SIZE" "${RCPTS[@]}")

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -srm), $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "fs: $(df -T "$BASE" | awk 'NR==2{print $2" on "$1}')"
    echo "load: $CONNS connections × $MPC messages, ~$SIZE bytes, ${NUSERS} recipients round-robin"
} >"$OUT/env.txt"

# ---------------------------------------------------------------- Postfix + Dovecot
if [[ $RUN_PEER == 1 && $RUN_IN == 1 ]]; then
    say "Postfix + Dovecot LMTP: starting private instances"
    bash "$HERE/peers/postfix_dovecot.sh" start
    {
        echo "postfix: $(dpkg-query -W -f '${Version}' postfix)"
        echo "dovecot: $(dpkg-query -W -f '${Version}' dovecot-core)"
    } >>"$OUT/env.txt"
    bash "$HERE/peers/postfix_dovecot.sh" reset-mail
    say "Postfix + Dovecot: idle memory ($IDLE connections)"
    $PY "$HERE/idle_memory.py" --port "${PW_PEER_SMTP_PORT:-12525}" --connections "$IDLE" \
        --pids-cmd "bash $HERE/peers/postfix_dovecot.sh smtpd-pids" --label postfix+dovecot --json \
        >"$OUT/postfix-idle.json"
    cat "$OUT/postfix-idle.json" >&2
    say "Postfix + Dovecot: warm-up"
    $PY "$HERE/e2e.py" --label warmup "${MAILDIRS[@]}" -- --port "${PW_PEER_SMTP_PORT:-12525}" "${WARM[@]}" >/dev/null
    busy_check "Postfix + Dovecot"
    say "Postfix + Dovecot: load $CONNS × $MPC, $REPEAT runs"
    run_load postfix+dovecot "$OUT/postfix.json" "${MAILDIRS[@]}" \
        -- --port "${PW_PEER_SMTP_PORT:-12525}" "${LOAD[@]}" || say "Postfix + Dovecot: no complete run"
    if [[ $KEEP == 0 ]]; then
        bash "$HERE/peers/postfix_dovecot.sh" stop   # give postwerk the whole machine
    fi
fi

# ---------------------------------------------------------------- postwerk
skip_pw() {
    say "postwerk: SKIPPED -- $1"
    printf '{"reason": "%s"}\n' "$1" >"$OUT/postwerk-skipped.json"
}
if [[ $RUN_PW == 1 && $RUN_IN == 1 ]]; then
    if ! bash "$HERE/peers/postwerk.sh" check 2>/dev/null; then
        skip_pw "postwerk command (${POSTWERK:-$REPO/.venv/bin/postwerk}) is not runnable yet"
    elif ! bash "$HERE/peers/postwerk.sh" start; then
        skip_pw "postwerk did not start (see $BASE/postwerk.log)"
    else
        PW_PORT=$((25 + PW_OFFSET))
        PW_DATA=${PW_POSTWERK_DATA_DIR:-$BASE/postwerk}
        if [[ -n ${PW_COUNT_CMD:-} ]]; then
            COUNTER=(--count-cmd "$PW_COUNT_CMD")
        else
            COUNTER=(--postwerk-data-dir "$PW_DATA" --query "${PW_COUNT_QUERY:-SELECT count(*) FROM item}")
        fi
        say "postwerk: idle memory ($IDLE connections)"
        $PY "$HERE/idle_memory.py" --port "$PW_PORT" --connections "$IDLE" \
            --pid-file "$PW_DATA/postwerk.pid" --include-children --label postwerk --json \
            >"$OUT/postwerk-idle.json" || say "postwerk idle memory failed"
        say "postwerk: warm-up"
        $PY "$HERE/e2e.py" --label warmup "${COUNTER[@]}" -- --port "$PW_PORT" "${WARM[@]}" >/dev/null \
            || say "postwerk warm-up incomplete"
        busy_check "postwerk"
        say "postwerk: load $CONNS × $MPC, $REPEAT runs"
        run_load postwerk "$OUT/postwerk.json" "${COUNTER[@]}" \
            -- --port "$PW_PORT" "${LOAD[@]}" || say "postwerk: no complete run"
        bash "$HERE/peers/postwerk.sh" stop
    fi
fi

# ---------------------------------------------------------------- mailbox size
if [[ $MAILBOX == 1 ]]; then
    export PW_WAIT_QUIET=$WAIT_QUIET
    MB_ARGS=(--out "$OUT" --prefill "$PREFILL")
    [[ $RUN_PEER == 1 ]] || MB_ARGS+=(--skip-peer)
    [[ $RUN_PW == 1 ]] || MB_ARGS+=(--skip-postwerk)
    bash "$HERE/mailbox_size.sh" "${MB_ARGS[@]}" || say "mailbox-size run failed"
fi

# ---------------------------------------------------------------- outbound relay (M2)
if [[ $RUN_OUT == 1 ]]; then
    OUT_ARGS=(--out "$OUT" --repeat "$REPEAT" --wait-quiet "$WAIT_QUIET"
              --connections "$CONNS" --messages "$MPC" --size "$SIZE")
    [[ $RUN_PEER == 1 ]] || OUT_ARGS+=(--skip-peer)
    [[ $RUN_PW == 1 ]] || OUT_ARGS+=(--skip-postwerk)
    [[ $KEEP == 0 ]] || OUT_ARGS+=(--keep)
    [[ -z $PW_REV ]] || OUT_ARGS+=(--postwerk-rev "$PW_REV")
    bash "$HERE/outbound.sh" "${OUT_ARGS[@]}" >/dev/null || say "outbound run failed"
fi

echo
echo "Results: $OUT"
cat "$OUT/env.txt"
[[ -f $OUT/outbound-env.txt ]] && cat "$OUT/outbound-env.txt"
echo
if [[ $RUN_IN == 1 ]]; then
    $PY "$HERE/report.py" "$OUT" | tee "$OUT/summary.txt"
fi
if [[ -f $OUT/outbound-summary.txt ]]; then
    echo
    tee -a "$OUT/summary.txt" <"$OUT/outbound-summary.txt"
fi
