#!/usr/bin/env bash
# Delivery rate into a mailbox that already holds 100,000 messages vs. into an empty one.
#
#   bench/mailbox_size.sh [--prefill 100000] [--connections 20] [--messages 25]
#                         [--out DIR] [--skip-peer] [--skip-postwerk] [--keep]
#
# Every message of a run goes to ONE mailbox: small@bench.test (emptied first) and
# then big@bench.test (pre-filled with --prefill ~10 KB messages; kept between runs
# and only re-filled when it holds fewer).  Same load otherwise: --connections ×
# --messages, ~10 KB each.  Writes postfix-mailbox.json / postwerk-mailbox.json
# ({"prefill", "small": e2e result, "big": e2e result, "big_over_small"}).
#
# Dovecot: the big Maildir is written directly (bench/maildir_fill.py), then Dovecot
# indexes it (doveadm force-resync + doveadm index), as after a migration.
# postwerk: pre-filling over SMTP would take too long, so it is a hook:
#   POSTWERK_PREFILL_CMD='...'  gets $1=data dir, $2=address, $3=count (also
#   PW_DATA_DIR, PW_ADDRESS, PW_COUNT) and must leave the mailbox holding that many
#   messages.  Without it the postwerk half is reported as pending.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Default hook: bench/postwerk_prefill.py, through the store API.
REPO=$(cd "$HERE/.." && pwd)
export POSTWERK_PREFILL_CMD=${POSTWERK_PREFILL_CMD:-"'$REPO/.venv/bin/python' '$HERE/postwerk_prefill.py' \"\$1\" \"\$2\" \"\$3\""}
BASE=${PW_BENCH_DIR:-/tmp/pw-bench}
export PW_BENCH_DIR=$BASE
PREFILL=100000
CONNS=20
MPC=25
SIZE=10240
OUT=""
RUN_PEER=1
RUN_PW=1
KEEP=0
PY=${PYTHON:-python3}
DOMAIN=${PW_BENCH_DOMAIN:-bench.test}
PW_OFFSET=${PW_POSTWERK_PORT_OFFSET:-20000}
export PW_POSTWERK_PORT_OFFSET=$PW_OFFSET

while [[ $# -gt 0 ]]; do
    case $1 in
        --prefill) PREFILL=$2; shift 2 ;;
        --connections) CONNS=$2; shift 2 ;;
        --messages|--messages-per-connection) MPC=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --skip-peer) RUN_PEER=0; shift ;;
        --skip-postwerk) RUN_PW=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
if [[ -z $OUT ]]; then
    OUT=$BASE/results/mailbox-$(date +%Y%m%d-%H%M%S)
fi
mkdir -p "$OUT"
say() { echo "== $*" >&2; }

cleanup() {
    if [[ $KEEP == 0 ]]; then
        bash "$HERE/peers/postwerk.sh" stop || true
        bash "$HERE/peers/postfix_dovecot.sh" stop || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

quiet() {  # PW_WAIT_QUIET=S: wait up to S s for an idle machine (run.sh --wait-quiet sets it)
    if [[ ${PW_WAIT_QUIET:-0} != 0 ]]; then
        say "$1: $($PY "$HERE/quiet.py" --max-wait "$PW_WAIT_QUIET")"
    fi
}

LOAD=(--connections "$CONNS" --messages-per-connection "$MPC" --size "$SIZE")

combine() {  # combine LABEL SMALL.json BIG.json PREFILL > out
    $PY - "$@" <<'EOF'
import json, sys
label, small, big, prefill = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s, b = json.load(open(small)), json.load(open(big))
r = b["delivered_per_s"] / s["delivered_per_s"] if s["delivered_per_s"] else None
print(json.dumps({"label": label, "prefill": prefill, "small": s, "big": b,
                  "big_over_small": round(r, 3) if r is not None else None}, indent=2))
EOF
}

# ---------------------------------------------------------------- Dovecot
if [[ $RUN_PEER == 1 ]]; then
    PEER=$HERE/peers/postfix_dovecot.sh
    bash "$PEER" start
    have=$(bash "$PEER" count big)
    if (( have < PREFILL )); then
        say "Dovecot: pre-filling big@$DOMAIN with $PREFILL messages (has $have)"
        t0=$(date +%s)
        bash "$PEER" prefill big "$PREFILL" >&2
        say "Dovecot: pre-fill + indexing took $(( $(date +%s) - t0 )) s"
    else
        say "Dovecot: big@$DOMAIN already holds $have messages"
    fi
    prefilled=$(bash "$PEER" count big)
    bash "$PEER" reset-mail small
    MD=$BASE/mail
    quiet "Dovecot small"
    say "Dovecot: $((CONNS * MPC)) messages into the empty mailbox"
    $PY "$HERE/e2e.py" --label "postfix+dovecot small" --out "$OUT/postfix-mailbox-small.json" \
        --maildir "$MD/small/Maildir" -- --port "${PW_PEER_SMTP_PORT:-12525}" "${LOAD[@]}" \
        --rcpt "small@$DOMAIN" >/dev/null || say "small run incomplete"
    quiet "Dovecot big"
    say "Dovecot: $((CONNS * MPC)) messages into the $prefilled-message mailbox"
    $PY "$HERE/e2e.py" --label "postfix+dovecot big" --out "$OUT/postfix-mailbox-big.json" \
        --maildir "$MD/big/Maildir" -- --port "${PW_PEER_SMTP_PORT:-12525}" "${LOAD[@]}" \
        --rcpt "big@$DOMAIN" >/dev/null || say "big run incomplete"
    combine "postfix+dovecot" "$OUT/postfix-mailbox-small.json" "$OUT/postfix-mailbox-big.json" \
        "$prefilled" >"$OUT/postfix-mailbox.json"
    $PY -c 'import json,sys; d=json.load(open(sys.argv[1])); print("   empty %.1f/s  %d-msg mailbox %.1f/s  ratio %s" % (d["small"]["delivered_per_s"], d["prefill"], d["big"]["delivered_per_s"], d["big_over_small"]))' "$OUT/postfix-mailbox.json" >&2
    [[ $KEEP == 1 ]] || bash "$PEER" stop
fi

# ---------------------------------------------------------------- postwerk
if [[ $RUN_PW == 1 ]]; then
    PWS=$HERE/peers/postwerk.sh
    if ! bash "$PWS" check 2>/dev/null; then
        say "postwerk mailbox-size: SKIPPED (postwerk not runnable yet)"
    elif [[ -z ${POSTWERK_PREFILL_CMD:-} ]]; then
        say "postwerk mailbox-size: PENDING (set POSTWERK_PREFILL_CMD; see docs/performance.md)"
    else
        PW_DATA=${PW_POSTWERK_DATA_DIR:-$BASE/postwerk}
        PW_PORT=$((25 + PW_OFFSET))
        COUNTER=(--postwerk-data-dir "$PW_DATA" --query "${PW_COUNT_QUERY:-SELECT count(*) FROM item}")
        [[ -z ${PW_COUNT_CMD:-} ]] || COUNTER=(--count-cmd "$PW_COUNT_CMD")
        bash "$PWS" start
        bash "$PWS" stop   # pre-fill with the server stopped (the hook may write the store directly)
        say "postwerk: pre-filling big@$DOMAIN with $PREFILL messages via POSTWERK_PREFILL_CMD"
        bash "$PWS" prefill big "$PREFILL"
        bash "$PWS" start
        quiet "postwerk small"
        $PY "$HERE/e2e.py" --label "postwerk small" --out "$OUT/postwerk-mailbox-small.json" "${COUNTER[@]}" \
            -- --port "$PW_PORT" "${LOAD[@]}" --rcpt "small@$DOMAIN" >/dev/null || say "small run incomplete"
        quiet "postwerk big"
        $PY "$HERE/e2e.py" --label "postwerk big" --out "$OUT/postwerk-mailbox-big.json" "${COUNTER[@]}" \
            -- --port "$PW_PORT" "${LOAD[@]}" --rcpt "big@$DOMAIN" >/dev/null || say "big run incomplete"
        combine postwerk "$OUT/postwerk-mailbox-small.json" "$OUT/postwerk-mailbox-big.json" \
            "$PREFILL" >"$OUT/postwerk-mailbox.json"
        bash "$PWS" stop
    fi
fi
echo "mailbox-size results: $OUT" >&2
