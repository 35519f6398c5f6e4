#!/usr/bin/env bash
# Split deployment benchmark (issue 5): the same load against
#   aio-sqlite  one all-in-one server on SQLite and files (the embedded default)
#   aio-pg      one all-in-one server on PostgreSQL (blobs in the database)
#   split-pg    a Client Access server (127.0.0.1) relaying SMTP to and proxying IMAP4
#               to a Mailbox server (127.0.0.2), both on PostgreSQL
# all on this machine's cores, one configuration at a time.
#
# Load, for each: SMTP end to end (bench/e2e.py: smtpload through port 25, one
# recipient per message over u1..u20, delivered counted in the item table) and IMAP4 over TLS on 993 (bench/imapload.py: UID FETCH
# metadata of one mailbox, and 20 sessions looping SELECT + 50 headers + 1 body).
# Report: bench/split_report.py (split-pg / aio-pg is the proxy's cost; aio-pg /
# aio-sqlite is PostgreSQL's).
#
#   bench/split.sh [--repeat N] [--duration S] [--connections C] [--messages M]
#                  [--skip-sqlite] [--wait-quiet S]
#
# Environment: POSTWERK (command), PYTHON, PW_BENCH_DIR (/tmp/pw-bench),
# PW_BENCH_PG (postgresql://postgres@127.0.0.1:5432: a server where databases
# postwerk_bench_* may be created and dropped), PW_SPLIT_PORT_OFFSET (30000).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
BASE=${PW_BENCH_DIR:-/tmp/pw-bench}/split
POSTWERK=${POSTWERK:-$REPO/.venv/bin/postwerk}
PY=${PYTHON:-$REPO/.venv/bin/python}
PG=${PW_BENCH_PG:-postgresql://postgres@127.0.0.1:5432}
OFFSET=${PW_SPLIT_PORT_OFFSET:-30000}
DOMAIN=bench.test
USERS=20
REPEAT=3
DURATION=15
CONNECTIONS=20
MESSAGES=100
SKIP_SQLITE=0
WAIT_QUIET=0

while [[ $# -gt 0 ]]; do
    case $1 in
        --repeat) REPEAT=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --connections) CONNECTIONS=$2; shift 2 ;;
        --messages) MESSAGES=$2; shift 2 ;;
        --skip-sqlite) SKIP_SQLITE=1; shift ;;
        --wait-quiet) WAIT_QUIET=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

OUT=$BASE/results/$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
PIDS=()

say() { echo "[split] $*" >&2; }

admin_sql() { psql "$PG/test" -v ON_ERROR_STOP=1 -qAt -c "$1" >/dev/null; }

fresh_database() {
    admin_sql "DROP DATABASE IF EXISTS $1 WITH (FORCE)"
    admin_sql "CREATE DATABASE $1"
}

cleanup() {
    local pid
    for pid in "${PIDS[@]:-}"; do
        [[ -n $pid ]] && kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]:-}"; do
        [[ -n $pid ]] && wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}
trap cleanup EXIT

wait_port() {  # host port
    local i
    for i in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    say "$1:$2 did not open"
    return 1
}

quiet() {
    [[ $WAIT_QUIET -gt 0 ]] || return 0
    "$PY" "$HERE/quiet.py" --max-wait "$WAIT_QUIET" >&2 || true
}

# init DIR ROLES ADDRESS HOSTNAME [DATABASE_URL]
init_server() {
    local dir=$1 roles=$2 address=$3 hostname=$4 database=${5:-}
    rm -rf "$dir"
    local extra=()
    [[ -n $database ]] && extra=(--database "$database")
    "$POSTWERK" init --domain "$DOMAIN" --roles "$roles" --hostname "$hostname" \
        --bind "$address" --port-offset "$OFFSET" --data-dir "$dir" "${extra[@]}" \
        >"$dir.init.log" 2>&1 || { cat "$dir.init.log" >&2; exit 1; }
}

# serve DIR ADDRESS
serve() {
    POSTWERK_ADMIN__BIND=$2 POSTWERK_LOGGING__LEVEL=warning \
        "$POSTWERK" serve --data-dir "$1" >"$1.log" 2>&1 &
    PIDS+=($!)
}

mailboxes() {  # DIR
    local u
    for u in $(seq -f 'u%g' 1 "$USERS"); do
        echo "bench-password-$u" | "$POSTWERK" mailbox new "$u@$DOMAIN" --password-stdin \
            --data-dir "$1" >/dev/null
    done
    "$POSTWERK" imap enable --data-dir "$1" >/dev/null
}

# measure LABEL HOST COUNT_CMD
measure() {
    local label=$1 host=$2 count=$3 run rcpts=()
    local u
    # One recipient per message, round-robin over every user: each IMAP session below
    # finds mail in its own mailbox.
    for u in $(seq 1 "$USERS"); do rcpts+=(--rcpt "u$u@$DOMAIN"); done
    # The delivered counter is a psql/sqlite3 process per poll: every 0.25 s, not
    # e2e.py's 20 ms, which spent a share of these two cores on process starts.
    for run in $(seq 1 "$REPEAT"); do
        quiet
        say "$label: SMTP run $run ($CONNECTIONS connections x $MESSAGES messages)"
        "$PY" "$HERE/e2e.py" --label "$label" --count-cmd "$count" --interval 0.25 \
            --out "$OUT/$label-smtp-run$run.json" -- --host "$host" --port $((25 + OFFSET)) \
            --connections "$CONNECTIONS" --messages-per-connection "$MESSAGES" "${rcpts[@]}" \
            >/dev/null
    done
    wait_port "$host" $((993 + OFFSET))
    local common=(--host "$host" --port $((993 + OFFSET)) --label "$label")
    for run in $(seq 1 "$REPEAT"); do
        quiet
        say "$label: IMAP run $run"
        "$PY" "$HERE/imapload.py" fetch-meta "${common[@]}" --user "u1@$DOMAIN" --repeat 5 \
            --out "$OUT/$label-fetch-meta-run$run.json" >/dev/null
        "$PY" "$HERE/imapload.py" session-ops "${common[@]}" --clients "$USERS" \
            --duration "$DURATION" --out "$OUT/$label-session-ops-run$run.json" >/dev/null
    done
}

pg_count() {  # DATABASE
    echo "psql $PG/$1 -qAt -c 'SELECT count(*) FROM item'"
}

{
    echo "date: $(date -u +%FT%TZ)"
    echo "rev: $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "cpus: $(nproc)"
    echo "postgresql: $(psql "$PG/test" -qAt -c 'SHOW server_version' 2>/dev/null || echo '?')"
    echo "load: $(cat /proc/loadavg)"
    echo "repeat=$REPEAT duration=$DURATION connections=$CONNECTIONS messages=$MESSAGES"
} >"$OUT/env.txt"

if [[ $SKIP_SQLITE -eq 0 ]]; then
    say "aio-sqlite: all-in-one on SQLite"
    init_server "$BASE/aio-sqlite" cas,mailbox 127.0.0.1 mail.$DOMAIN
    mailboxes "$BASE/aio-sqlite"
    serve "$BASE/aio-sqlite" 127.0.0.1
    wait_port 127.0.0.1 $((25 + OFFSET))
    measure aio-sqlite 127.0.0.1 \
        "sqlite3 $BASE/aio-sqlite/postwerk.db 'SELECT count(*) FROM item'"
    cleanup
fi

say "aio-pg: all-in-one on PostgreSQL"
fresh_database postwerk_bench_aio
init_server "$BASE/aio-pg" cas,mailbox 127.0.0.1 mail.$DOMAIN "$PG/postwerk_bench_aio"
mailboxes "$BASE/aio-pg"
serve "$BASE/aio-pg" 127.0.0.1
wait_port 127.0.0.1 $((25 + OFFSET))
measure aio-pg 127.0.0.1 "$(pg_count postwerk_bench_aio)"
cleanup

say "split-pg: CAS on 127.0.0.1 -> Mailbox on 127.0.0.2, PostgreSQL"
fresh_database postwerk_bench_split
init_server "$BASE/split-mbx" mailbox 127.0.0.2 mbx1.$DOMAIN "$PG/postwerk_bench_split"
init_server "$BASE/split-cas" cas 127.0.0.1 cas1.$DOMAIN "$PG/postwerk_bench_split"
mailboxes "$BASE/split-cas"
serve "$BASE/split-mbx" 127.0.0.2
wait_port 127.0.0.2 $((2525 + OFFSET))
serve "$BASE/split-cas" 127.0.0.1
wait_port 127.0.0.1 $((25 + OFFSET))
measure split-pg 127.0.0.1 "$(pg_count postwerk_bench_split)"
cleanup

admin_sql "DROP DATABASE IF EXISTS postwerk_bench_aio WITH (FORCE)"
admin_sql "DROP DATABASE IF EXISTS postwerk_bench_split WITH (FORCE)"
"$PY" "$HERE/split_report.py" "$OUT" | tee "$OUT/summary.txt"
ln -sfn "$OUT" "$BASE/results/latest"
