#!/usr/bin/env bash
# postwerk side of the benchmark, written against the DESIGN contract:
#   postwerk init --domain bench.test --data-dir DIR --bind 127.0.0.1
#   postwerk mailbox new uN@bench.test --password-stdin      (POSTWERK_DATA_DIR=DIR)
#   postwerk serve --data-dir DIR --port-offset 20000         (SMTP 25 -> 20025; writes DIR/postwerk.pid)
#
#   bench/peers/postwerk.sh check        # exit 0 if the postwerk command is runnable, 3 if not
#   bench/peers/postwerk.sh start        # init (once) + mailboxes + serve in the background
#   bench/peers/postwerk.sh stop         # SIGTERM the server (it drains and exits 0)
#   bench/peers/postwerk.sh status | pid
#   bench/peers/postwerk.sh reset        # stop and delete the data dir
#   bench/peers/postwerk.sh prefill USER N   # runs $POSTWERK_PREFILL_CMD (hook; see docs/performance.md)
#
# Environment: POSTWERK (command, default <repo>/.venv/bin/postwerk), PW_BENCH_DIR
# (/tmp/pw-bench), PW_POSTWERK_PORT_OFFSET (20000), PW_BENCH_USERS (20), PW_BENCH_DOMAIN.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BASE=${PW_BENCH_DIR:-/tmp/pw-bench}
DATA=${PW_POSTWERK_DATA_DIR:-$BASE/postwerk}
OFFSET=${PW_POSTWERK_PORT_OFFSET:-20000}
DOMAIN=${PW_BENCH_DOMAIN:-bench.test}
NUSERS=${PW_BENCH_USERS:-20}
POSTWERK=${POSTWERK:-$REPO/.venv/bin/postwerk}
SMTP_PORT=$((25 + OFFSET))
LOG=$BASE/postwerk.log
export POSTWERK_DATA_DIR=$DATA

log() { echo "[postwerk] $*" >&2; }

runnable() {
    # shellcheck disable=SC2086
    command -v ${POSTWERK%% *} >/dev/null 2>&1 || return 1
    $POSTWERK --help >/dev/null 2>&1 || return 1
    $POSTWERK serve --help >/dev/null 2>&1 || return 1
}

pid_of() {
    [[ -f $DATA/postwerk.pid ]] || return 1
    local p
    p=$(tr -dc '0-9' <"$DATA/postwerk.pid")
    [[ -n $p ]] && kill -0 "$p" 2>/dev/null && echo "$p"
}

wait_port() {
    local i
    for i in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$SMTP_PORT") 2>/dev/null; then return 0; fi
        if [[ -n ${SERVE_PID:-} ]] && ! kill -0 "$SERVE_PID" 2>/dev/null; then
            log "postwerk serve exited early; last log lines:"
            tail -20 "$LOG" >&2 || true
            return 1
        fi
        sleep 0.1
    done
    log "127.0.0.1:$SMTP_PORT did not open within 30 s"
    return 1
}

do_start() {
    if ! runnable; then
        log "'$POSTWERK' is not runnable yet -- skipping postwerk"
        exit 3
    fi
    mkdir -p "$BASE"
    if pid_of >/dev/null; then
        log "already running (pid $(pid_of))"
        return 0
    fi
    if [[ ! -e $DATA/postwerk.toml ]]; then
        log "init $DATA (domain $DOMAIN, bound to 127.0.0.1)"
        $POSTWERK init --domain "$DOMAIN" --data-dir "$DATA" --bind 127.0.0.1 >"$BASE/postwerk-init.log" 2>&1 \
            || { cat "$BASE/postwerk-init.log" >&2; exit 1; }
        for u in $(seq -f 'u%g' 1 "$NUSERS") small big; do
            echo "bench-password-$u" | $POSTWERK mailbox new "$u@$DOMAIN" --password-stdin \
                >>"$BASE/postwerk-init.log" 2>&1 \
                || { tail -5 "$BASE/postwerk-init.log" >&2; exit 1; }
        done
        # Postfix allows 50 concurrent sessions per client (smtpd_client_connection_count_limit);
        # Exchange's MaxInboundConnectionPerSource is 20. The load and the idle-memory probe
        # all come from 127.0.0.1, so lift it here as an admin would for a relay host.
        local frontend
        frontend=$($POSTWERK connector receive list --json \
            | python3 -c 'import json,sys; print(next(c["name"] for c in json.load(sys.stdin) if c["name"].startswith("Default Frontend")))')
        $POSTWERK connector receive set "$frontend" --max-connections-per-source 1000 \
            >>"$BASE/postwerk-init.log" 2>&1
    fi
    log "serve --data-dir $DATA --port-offset $OFFSET (SMTP 127.0.0.1:$SMTP_PORT)"
    # setsid: own process group, so stop can signal it without touching anything else
    setsid $POSTWERK serve --data-dir "$DATA" --port-offset "$OFFSET" >"$LOG" 2>&1 </dev/null &
    SERVE_PID=$!
    echo "$SERVE_PID" >"$BASE/postwerk-serve.pid"
    wait_port
    # never listen outside loopback
    if ss -Hltnp 2>/dev/null | grep "pid=$SERVE_PID," | awk '{print $4}' | grep -Ev '^(127\.|\[::1\]|\[::ffff:127\.)' ; then
        log "postwerk listens on a non-loopback address (above) -- stopping it"
        do_stop
        exit 1
    fi
    log "up (pid $SERVE_PID)"
}

do_stop() {
    local p=""
    p=$(pid_of) || p=""
    if [[ -z $p && -f $BASE/postwerk-serve.pid ]]; then
        p=$(cat "$BASE/postwerk-serve.pid")
        kill -0 "$p" 2>/dev/null || p=""
    fi
    [[ -n $p ]] || return 0
    log "stopping pid $p (SIGTERM)"
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then
        log "pid $p still running after 15 s, SIGKILL"
        kill -KILL "$p" 2>/dev/null || true
    fi
    rm -f "$BASE/postwerk-serve.pid"
}

do_prefill() {
    local user=${1:?user} n=${2:?count}
    if [[ -z ${POSTWERK_PREFILL_CMD:-} ]]; then
        log "no POSTWERK_PREFILL_CMD set: postwerk mailbox pre-fill is pending (see docs/performance.md)"
        exit 3
    fi
    # The hook gets: DATA dir, mailbox address, count (also as env vars)
    PW_DATA_DIR=$DATA PW_ADDRESS="$user@$DOMAIN" PW_COUNT=$n \
        bash -c "$POSTWERK_PREFILL_CMD" _ "$DATA" "$user@$DOMAIN" "$n"
}

cmd=${1:-start}
shift || true
case $cmd in
    check) runnable || { log "'$POSTWERK' is not runnable"; exit 3; } ;;
    start) do_start ;;
    stop) do_stop ;;
    status) if p=$(pid_of); then echo "postwerk: running (pid $p, smtp 127.0.0.1:$SMTP_PORT)"; else echo "postwerk: stopped"; fi ;;
    pid) pid_of ;;
    reset) do_stop; rm -rf "$DATA" ;;
    prefill) do_prefill "$@" ;;
    *) echo "usage: $0 {check|start|stop|status|pid|reset|prefill USER N}" >&2; exit 2 ;;
esac
