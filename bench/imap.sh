#!/usr/bin/env bash
# IMAP/POP3 benchmark (issue 4): the same client (bench/imapload.py) against a private
# Dovecot 2.3 (bench/peers/dovecot_imap.sh) and postwerk (bench/peers/postwerk.sh), one
# after the other, each with the machine to itself, then a side-by-side table.
#
#   bench/imap.sh [--messages 10000] [--big] [--loop-messages 1000] [--clients 20]
#                 [--duration 30] [--idle-connections 200] [--repeat 3] [--wait-quiet S]
#                 [--skip-peer] [--skip-postwerk] [--keep] [--out DIR]
#                 [--postwerk-rev REV] [--reset-postwerk]
#
#   --messages N        SELECT / metadata FETCH / body FETCH on one mailbox of N ~10 KB
#                       messages (user mboxN@bench.test)
#   --big               also SELECT + metadata FETCH on 100,000 messages (mbox100000)
#   --loop-messages M   u1..u20 hold M messages each (session-ops, login-loop, pop3-retr)
#   --duration S        seconds per loop run (session-ops, login-loop, pop3-retr)
#   --repeat R          loop runs per server (the median one is reported); the
#                       single-session timings take 3*R samples (after one untimed warm-up)
#   --wait-quiet S      before each measurement wait (at most S s) until the CPUs are idle
#   --keep              leave both servers running at the end
#   --postwerk-rev REV  run postwerk from `git archive REV` (PYTHONPATH) instead of the
#                       working tree, with its own data dir $PW_BENCH_DIR/postwerk-imap-<sha>
#   --reset-postwerk    delete postwerk's bench data dir first (after a schema change)
# Results (JSON per server and test, env.txt, summary.txt) go to
# $PW_BENCH_DIR/results/<timestamp>/ (default /tmp/pw-bench; `latest` links to it);
# bench/imap_report.py DIR prints the table again.
# Everything is on 127.0.0.1, over TLS: Dovecot IMAPS 12993 / POP3S 12995, postwerk
# (port offset $PW_POSTWERK_PORT_OFFSET = 20000) IMAPS 20993 / POP3S 20995.
# postwerk runs from its own data dir ($PW_BENCH_DIR/postwerk-imap), Dovecot from its
# own mail root ($PW_BENCH_DIR/dovecot-imap/mail), so bench/run.sh never touches them.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
BASE=${PW_BENCH_DIR:-/tmp/pw-bench}
export PW_BENCH_DIR=$BASE
MESSAGES=10000
BIG=0
BIGN=100000
LOOPN=1000
CLIENTS=20
DURATION=30
IDLE=200
REPEAT=3
WAIT_QUIET=0
RUN_PEER=1
RUN_PW=1
KEEP=0
OUT=""
PW_REV=""
RESET_PW=0
PY=${PYTHON:-$REPO/.venv/bin/python}
[[ -x $PY ]] || PY=python3
POSTWERK=${POSTWERK:-$REPO/.venv/bin/postwerk}
PW_OFFSET=${PW_POSTWERK_PORT_OFFSET:-20000}
export PW_POSTWERK_PORT_OFFSET=$PW_OFFSET
NUSERS=${PW_BENCH_USERS:-20}
DOMAIN=${PW_BENCH_DOMAIN:-bench.test}
DV_IMAPS=${PW_PEER_IMAPS_PORT:-12993}
DV_POP3S=${PW_PEER_POP3S_PORT:-12995}

while [[ $# -gt 0 ]]; do
    case $1 in
        --messages) MESSAGES=$2; shift 2 ;;
        --big) BIG=1; shift ;;
        --loop-messages) LOOPN=$2; shift 2 ;;
        --clients) CLIENTS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --idle-connections) IDLE=$2; shift 2 ;;
        --repeat) REPEAT=$2; shift 2 ;;
        --wait-quiet) WAIT_QUIET=$2; shift 2 ;;
        --skip-peer) RUN_PEER=0; shift ;;
        --skip-postwerk) RUN_PW=0; shift ;;
        --keep) KEEP=1; shift ;;
        --out) OUT=$2; shift 2 ;;
        --postwerk-rev) PW_REV=$2; shift 2 ;;
        --reset-postwerk) RESET_PW=1; shift ;;
        -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
if (( CLIENTS > NUSERS )); then
    echo "--clients $CLIENTS > $NUSERS bench users (PW_BENCH_USERS)" >&2
    exit 2
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "bench/imap.sh needs root (apt-get install, private dovecot instance)" >&2
    exit 1
fi

if [[ -n $PW_REV ]]; then
    sha=$(git -C "$REPO" rev-parse --short=12 "$PW_REV^{commit}")
    SNAP=$BASE/postwerk-src-$sha
    if [[ ! -d $SNAP/src/postwerk ]]; then
        mkdir -p "$SNAP"
        git -C "$REPO" archive "$sha" src | tar -x -C "$SNAP"
    fi
    if [[ ! -f $SNAP/bench/postwerk_prefill.py ]]; then   # the pre-fill of the same revision
        git -C "$REPO" archive "$sha" bench | tar -x -C "$SNAP"
    fi
    export POSTWERK="env PYTHONPATH=$SNAP/src $REPO/.venv/bin/postwerk"
    PW_PY=(env "PYTHONPATH=$SNAP/src" "$PY")
    PREFILL=$SNAP/bench/postwerk_prefill.py
    export PW_POSTWERK_DATA_DIR=${PW_POSTWERK_DATA_DIR:-$BASE/postwerk-imap-$sha}
    PW_VERSION="commit $sha (git archive, $SNAP)"
else
    PW_PY=("$PY")
    PREFILL=$HERE/postwerk_prefill.py
    export PW_POSTWERK_DATA_DIR=${PW_POSTWERK_DATA_DIR:-$BASE/postwerk-imap}
    dirty=$(git -C "$REPO" status --porcelain -- src 2>/dev/null | wc -l)
    PW_VERSION="working tree at $(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null), $dirty changed files under src/"
fi
PW_DATA=$PW_POSTWERK_DATA_DIR

SIZES=("$MESSAGES")
[[ $BIG == 0 ]] || SIZES+=("$BIGN")
EXTRA=""
for n in "${SIZES[@]}"; do EXTRA+="mbox$n "; done
export PW_BENCH_EXTRA_USERS=$EXTRA

if [[ -z $OUT ]]; then
    OUT=$BASE/results/imap-$(date +%Y%m%d-%H%M%S)
    mkdir -p "$OUT"
    ln -sfn "$OUT" "$BASE/results/latest"
fi
mkdir -p "$OUT"
say() { echo "== $*" >&2; }

cleanup() {
    if [[ $KEEP == 0 ]]; then
        bash "$HERE/peers/postwerk.sh" stop || true
        bash "$HERE/peers/dovecot_imap.sh" stop || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

busy_check() {  # warn (and record) if something else is using the CPU
    local la
    la=$(cut -d' ' -f1 /proc/loadavg)
    echo "loadavg before $1: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"
    if awk -v l="$la" 'BEGIN{exit !(l > 0.7)}'; then
        say "WARNING: load average is $la before $1 -- other work on this machine will skew the figures"
        ps -eo pcpu,pid,comm --sort=-pcpu | awk 'NR>1 && $1>10' | head -5 | sed 's/^/   busy: /' >&2
    fi
}

quiet() {
    if [[ $WAIT_QUIET != 0 ]]; then
        echo "$1: $($PY "$HERE/quiet.py" --max-wait "$WAIT_QUIET")" >>"$OUT/env.txt"
    fi
}

LOAD=("$PY" "$HERE/imapload.py")

# measure LABEL IMAPS_PORT POP3S_PORT IDLE_ARGS...: every test against one server
measure() {
    local label=$1 imaps=$2 pop3s=$3; shift 3
    local idle_args=("$@") n i f files
    local common=(--host 127.0.0.1 --label "$label")
    busy_check "$label"
    # first, while the server is fresh: what the loads below leave behind (and give
    # back) would blur the growth of a one-process server's PSS
    say "$label: $IDLE idle IMAP IDLE connections over TLS"
    quiet "$label idle"
    "${LOAD[@]}" idle "${common[@]}" --port "$imaps" --connections "$IDLE" --users "$CLIENTS" \
        "${idle_args[@]}" --out "$OUT/$label-idle.json" >&2 || say "$label idle failed"
    for n in "${SIZES[@]}"; do
        say "$label: SELECT, metadata FETCH on $n messages"
        quiet "$label select $n"
        "${LOAD[@]}" select "${common[@]}" --port "$imaps" --user "mbox$n@$DOMAIN" \
            --repeat $((3 * REPEAT)) --out "$OUT/$label-select-$n.json" >&2 || say "$label select $n failed"
        quiet "$label fetch-meta $n"
        "${LOAD[@]}" fetch-meta "${common[@]}" --port "$imaps" --user "mbox$n@$DOMAIN" \
            --repeat $((3 * REPEAT)) --out "$OUT/$label-fetch-meta-$n.json" >&2 || say "$label fetch-meta $n failed"
    done
    say "$label: body FETCH (1,000 messages per command) on $MESSAGES messages"
    quiet "$label fetch-body"
    "${LOAD[@]}" fetch-body "${common[@]}" --port "$imaps" --user "mbox$MESSAGES@$DOMAIN" \
        --repeat $((3 * REPEAT)) --out "$OUT/$label-fetch-body.json" >&2 || say "$label fetch-body failed"
    say "$label: warm-up (session-ops, 3 s)"
    "${LOAD[@]}" session-ops "${common[@]}" --port "$imaps" --clients "$CLIENTS" --duration 3 >/dev/null || true
    local test port
    for test in session-ops login-loop pop3-retr; do
        port=$imaps
        [[ $test != pop3-retr ]] || port=$pop3s
        files=()
        for i in $(seq 1 "$REPEAT"); do
            quiet "$label $test run $i"
            f=$OUT/$label-$test-run$i.json
            "${LOAD[@]}" "$test" "${common[@]}" --port "$port" --clients "$CLIENTS" \
                --duration "$DURATION" --out "$f" >/dev/null || say "$label $test run $i failed"
            [[ -s $f ]] || continue
            files+=("$f")
            $PY -c 'import json,sys; d=json.load(open(sys.argv[1])); print("   %s run %s: %s/s, client %s cores, machine %s%% busy%s" % (d["test"], sys.argv[2], d.get("ops_per_s"), d.get("client_cpu_cores"), d.get("machine_busy_pct"), "  ERRORS: %s" % d["errors"][:2] if d.get("errors") else ""))' "$f" "$i" >&2 || true
        done
        if [[ ${#files[@]} -gt 0 ]]; then
            $PY -c '
import json, shutil, sys
out, files = sys.argv[1], sys.argv[2:]
runs = sorted((json.load(open(f)).get("ops_per_s") or 0, f) for f in files)
shutil.copy(runs[len(runs) // 2][1], out)
' "$OUT/$label-$test.json" "${files[@]}"
        fi
    done
}

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -srm), $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "fs: $(df -T "$BASE" | awk 'NR==2{print $2" on "$1}')"
    echo "load: mailboxes of ${SIZES[*]} messages (~10 KB); loops: $CLIENTS clients × ${DURATION}s on u1..u$CLIENTS ($LOOPN messages each); $IDLE idle connections; repeat $REPEAT; all over TLS"
} >>"$OUT/env.txt"

# Each server gets the machine to itself: stop a postwerk left running on our ports
# (this data dir's, or run.sh's default one).
bash "$HERE/peers/postwerk.sh" stop || true
PW_POSTWERK_DATA_DIR=$BASE/postwerk bash "$HERE/peers/postwerk.sh" stop || true

# ---------------------------------------------------------------- Dovecot
if [[ $RUN_PEER == 1 ]]; then
    say "Dovecot: starting the private IMAP/POP3 instance"
    bash "$HERE/peers/dovecot_imap.sh" start
    {
        echo "dovecot: $(dpkg-query -W -f '${Version}' dovecot-core) ($(/usr/sbin/dovecot --version))"
        echo "dovecot config: $BASE/dovecot-imap/dovecot.conf (passdb scheme ${PW_DOVECOT_PASS_SCHEME:-SHA512-CRYPT}, auth_cache_size 10M, mail_max_userip_connections 1000, default_process_limit 1000, default_client_limit 5000; login processes in the default high-security mode)"
    } >>"$OUT/env.txt"
    for n in "${SIZES[@]}"; do
        bash "$HERE/peers/dovecot_imap.sh" prefill "mbox$n" "$n"
    done
    for i in $(seq 1 "$CLIENTS"); do
        bash "$HERE/peers/dovecot_imap.sh" prefill "u$i" "$LOOPN" 2>/dev/null
    done
    measure dovecot "$DV_IMAPS" "$DV_POP3S" \
        --pid "$(bash "$HERE/peers/dovecot_imap.sh" master-pid)" --process-names imap,imap-login
    [[ $KEEP == 1 ]] || bash "$HERE/peers/dovecot_imap.sh" stop   # give postwerk the whole machine
fi

# ---------------------------------------------------------------- postwerk
pw() { POSTWERK_DATA_DIR=$PW_DATA $POSTWERK "$@"; }
skip_pw() {
    say "postwerk: SKIPPED -- $1"
    printf '{"reason": "%s"}\n' "$1" >"$OUT/postwerk-skipped.json"
}
if [[ $RUN_PW == 1 ]]; then
    if [[ $RESET_PW == 1 ]]; then
        say "postwerk: deleting $PW_DATA (--reset-postwerk)"
        bash "$HERE/peers/postwerk.sh" reset
    fi
    if ! bash "$HERE/peers/postwerk.sh" check 2>/dev/null; then
        skip_pw "postwerk command ($POSTWERK) is not runnable"
    elif ! bash "$HERE/peers/postwerk.sh" start; then
        skip_pw "postwerk did not start (see $BASE/postwerk.log)"
    else
        existing=$(pw mailbox list 2>/dev/null || true)
        for n in "${SIZES[@]}"; do
            if ! grep -q "mbox$n@$DOMAIN" <<<"$existing"; then
                echo "bench-password-mbox$n" | pw mailbox new "mbox$n@$DOMAIN" --password-stdin >&2
            fi
        done
        # IMAP and POP3 are off by default; the load (20 sessions) and the idle probe
        # ($IDLE connections) all come from 127.0.0.1 as few users, so lift the
        # per-address and per-user limits (64 / 16 by default) as an admin would.
        lim=$(( IDLE > 1000 ? IDLE : 1000 ))
        for proto in imap pop; do
            pw "$proto" enable >/dev/null
            pw "$proto" settings --max-connections-per-ip "$lim" --max-connections-per-user "$lim" >/dev/null
        done
        echo "postwerk: $PW_VERSION, data dir $PW_DATA; imap/pop enabled, --max-connections-per-ip $lim --max-connections-per-user $lim (defaults 64 / 16)" >>"$OUT/env.txt"
        # pre-fill with the server stopped (bench/postwerk_prefill.py writes through the store)
        bash "$HERE/peers/postwerk.sh" stop
        for n in "${SIZES[@]}"; do
            "${PW_PY[@]}" "$PREFILL" "$PW_DATA" "mbox$n@$DOMAIN" "$n"
        done
        for i in $(seq 1 "$CLIENTS"); do
            "${PW_PY[@]}" "$PREFILL" "$PW_DATA" "u$i@$DOMAIN" "$LOOPN" 2>/dev/null
        done
        bash "$HERE/peers/postwerk.sh" start
        PW_IMAPS=$((993 + PW_OFFSET))
        PW_POP3S=$((995 + PW_OFFSET))
        for _ in $(seq 1 100); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$PW_IMAPS") 2>/dev/null \
                && (exec 3<>"/dev/tcp/127.0.0.1/$PW_POP3S") 2>/dev/null; then break; fi
            sleep 0.1
        done
        measure postwerk "$PW_IMAPS" "$PW_POP3S" --pid-file "$PW_DATA/postwerk.pid" --include-children
        [[ $KEEP == 1 ]] || bash "$HERE/peers/postwerk.sh" stop
    fi
fi

echo
echo "Results: $OUT"
cat "$OUT/env.txt"
echo
"$PY" "$HERE/imap_report.py" "$OUT" | tee "$OUT/summary.txt"
