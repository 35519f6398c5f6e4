#!/usr/bin/env bash
# postwerk as a relay for the outbound benchmark: its own data directory, a receive
# connector that lets 127.0.0.1 relay (the Exchange way: ExternalAuthoritative +
# ExchangeServers), and one send connector "Sink" with the sink as smart host.
#
#   postwerk init --domain bench.test --data-dir DIR --bind 127.0.0.1
#   postwerk connector receive set "Bench relay" --new --bindings 127.0.0.1:25 \
#       --remote-ip-ranges 127.0.0.1/32 --permission-groups ExchangeServers \
#       --auth-mechanisms ExternalAuthoritative --max-connections-per-source 1000
#   postwerk connector send new Sink --address-spaces '*' --smart-hosts '[127.0.0.9]:12530' --tls none
#   postwerk serve --data-dir DIR --port-offset 21000          (SMTP 127.0.0.1:21025)
#
#   bench/peers/postwerk_relay.sh check     # exit 0 if the postwerk command is runnable, 3 if not
#   bench/peers/postwerk_relay.sh start     # init (once) + serve in the background
#   bench/peers/postwerk_relay.sh stop      # SIGTERM (it drains and exits)
#   bench/peers/postwerk_relay.sh status | pid
#   bench/peers/postwerk_relay.sh hold      # stop, disable Sink, start: new mail waits in Unreachable
#   bench/peers/postwerk_relay.sh release   # enable Sink (live: the server reroutes within ~5-10 s)
#   bench/peers/postwerk_relay.sh queued    # messages in the queue (queue_message rows)
#   bench/peers/postwerk_relay.sh reset     # stop and delete the data directory
#
# Environment: POSTWERK, PW_BENCH_DIR (/tmp/pw-bench), PW_RELAY_PORT_OFFSET (21000),
# PW_SINK_HOST (127.0.0.9), PW_SINK_PORT (12530), PW_DELIVERY_PROCESSES (one per core:
# [transport] delivery_processes, as docs/performance.md advises for a relay; Postfix
# runs its smtp clients as separate processes by default).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BASE=${PW_BENCH_DIR:-/tmp/pw-bench}
DATA=${PW_RELAY_DATA_DIR:-$BASE/postwerk-relay}
OFFSET=${PW_RELAY_PORT_OFFSET:-21000}
SINK_HOST=${PW_SINK_HOST:-127.0.0.9}
SINK_PORT=${PW_SINK_PORT:-12530}
POSTWERK=${POSTWERK:-$REPO/.venv/bin/postwerk}
SMTP_PORT=$((25 + OFFSET))
LOG=$BASE/postwerk-relay.log
PIDFILE=$BASE/postwerk-relay-serve.pid
export POSTWERK_DATA_DIR=$DATA
export POSTWERK_TRANSPORT__DELIVERY_PROCESSES=${PW_DELIVERY_PROCESSES:-$(nproc)}

log() { echo "[postwerk_relay] $*" >&2; }

runnable() {
    # shellcheck disable=SC2086
    command -v ${POSTWERK%% *} >/dev/null 2>&1 || return 1
    $POSTWERK connector send --help >/dev/null 2>&1 || return 1
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

do_init() {
    [[ -e $DATA/postwerk.toml ]] && return 0
    log "init $DATA (domain bench.test, bound to 127.0.0.1; relay for 127.0.0.1; Sink -> [$SINK_HOST]:$SINK_PORT)"
    {
        $POSTWERK init --domain bench.test --data-dir "$DATA" --bind 127.0.0.1
        $POSTWERK connector receive set "Bench relay" --new --bindings 127.0.0.1:25 \
            --remote-ip-ranges 127.0.0.1/32 --permission-groups ExchangeServers \
            --auth-mechanisms ExternalAuthoritative --max-connections-per-source 1000
        $POSTWERK connector send new Sink --address-spaces '*' \
            --smart-hosts "[$SINK_HOST]:$SINK_PORT" --tls none
    } >"$BASE/postwerk-relay-init.log" 2>&1 || { cat "$BASE/postwerk-relay-init.log" >&2; exit 1; }
}

do_start() {
    if ! runnable; then
        log "'$POSTWERK' is not runnable (or has no 'connector send') -- skipping postwerk"
        exit 3
    fi
    mkdir -p "$BASE"
    do_init
    if pid_of >/dev/null; then
        return 0
    fi
    # setsid: own process group, so stop signals only it
    setsid $POSTWERK serve --data-dir "$DATA" --port-offset "$OFFSET" >>"$LOG" 2>&1 </dev/null &
    SERVE_PID=$!
    echo "$SERVE_PID" >"$PIDFILE"
    wait_port
    if ss -Hltnp 2>/dev/null | grep "pid=$SERVE_PID," | awk '{print $4}' | grep -Ev '^(127\.|\[::1\]|\[::ffff:127\.)' ; then
        log "postwerk listens on a non-loopback address (above) -- stopping it"
        do_stop
        exit 1
    fi
    log "up (pid $SERVE_PID, smtp 127.0.0.1:$SMTP_PORT)"
}

do_stop() {
    local p=""
    p=$(pid_of) || p=""
    if [[ -z $p && -f $PIDFILE ]]; then
        p=$(cat "$PIDFILE")
        kill -0 "$p" 2>/dev/null || p=""
    fi
    [[ -n $p ]] || return 0
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then
        log "pid $p still running after 15 s, SIGKILL"
        kill -KILL "$p" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
}

sink_connector() {  # sink_connector --enabled|--disabled
    $POSTWERK connector send set Sink "$1" >/dev/null
}

do_queued() {
    python3 - "$DATA/postwerk.db" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=10)
print(db.execute("SELECT count(*) FROM queue_message").fetchone()[0])
EOF
}

cmd=${1:-start}
shift || true
case $cmd in
    check) runnable || { log "'$POSTWERK' is not runnable"; exit 3; } ;;
    start) do_start ;;
    stop) do_stop ;;
    status) if p=$(pid_of); then echo "postwerk relay: running (pid $p, smtp 127.0.0.1:$SMTP_PORT)"; else echo "postwerk relay: stopped"; fi ;;
    pid) pid_of ;;
    # The server caches connectors for a few seconds; a restart makes "disabled" certain
    # before the load arrives (categorized straight into Unreachable).
    hold) do_stop; do_init; sink_connector --disabled; do_start ;;
    release) sink_connector --enabled ;;
    queued) do_queued ;;
    reset) do_stop; rm -rf "$DATA" ;;
    *) echo "usage: $0 {check|start|stop|status|pid|hold|release|queued|reset}" >&2; exit 2 ;;
esac
