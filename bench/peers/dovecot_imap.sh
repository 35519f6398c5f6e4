#!/usr/bin/env bash
# Private Dovecot 2.3 IMAP/POP3 peer for bench/imap.sh (issue 4).
#
#   bench/peers/dovecot_imap.sh install          # apt-get install dovecot-core/-imapd/-pop3d (never starts system services)
#   bench/peers/dovecot_imap.sh start            # install if needed, write config + cert, start (idempotent)
#   bench/peers/dovecot_imap.sh stop
#   bench/peers/dovecot_imap.sh status
#   bench/peers/dovecot_imap.sh count USER       # messages in USER's Maildir
#   bench/peers/dovecot_imap.sh prefill USER N   # USER's INBOX holds exactly N ~10 KB messages, indexed
#   bench/peers/dovecot_imap.sh master-pid
#
# Everything lives under $PW_BENCH_DIR/dovecot-imap (default /tmp/pw-bench/dovecot-imap):
# dovecot.conf, run/ (base_dir), state/, dovecot.log, users (passwd-file), tls/, and
# mail/<user>/Maildir -- its own mail root, so bench/run.sh's SMTP runs (which deliver
# to $PW_BENCH_DIR/mail) never change the mailboxes this benchmark reads.
# Listeners, all on 127.0.0.1: IMAP 12143 (STARTTLS), IMAPS 12993, POP3 12110 (STLS),
# POP3S 12995 ($PW_PEER_IMAP_PORT, ..._IMAPS_, ..._POP3_, ..._POP3S_PORT).
#
# Users: u1..u$PW_BENCH_USERS, small, big and any mboxN named in $PW_BENCH_EXTRA_USERS,
# password "bench-password-<user>" (what bench/peers/postwerk.sh gives postwerk's users),
# stored as $PW_DOVECOT_PASS_SCHEME (SHA512-CRYPT, `doveadm pw`'s recommendation for 2.3).
# Deviations from Dovecot's defaults, as an admin of a busy server would set them:
#   auth_cache_size = 10M            (default 0 = off; issue 4: "auth cache on")
#   mail_max_userip_connections = 1000, default_process_limit = 1000,
#   default_client_limit = 5000      (the load and the idle probe all come from 127.0.0.1;
#                                     defaults 10 / 100 / 1000 would refuse them)
# Everything else (login processes in high-security mode, service_count = 1 for
# imap-login/pop3-login, mail_fsync, index files) is Dovecot's default.
set -euo pipefail

BASE=${PW_BENCH_DIR:-/tmp/pw-bench}
DV=$BASE/dovecot-imap
MAIL=$DV/mail
IMAP_PORT=${PW_PEER_IMAP_PORT:-12143}
IMAPS_PORT=${PW_PEER_IMAPS_PORT:-12993}
POP3_PORT=${PW_PEER_POP3_PORT:-12110}
POP3S_PORT=${PW_PEER_POP3S_PORT:-12995}
NUSERS=${PW_BENCH_USERS:-20}
EXTRA_USERS=${PW_BENCH_EXTRA_USERS:-}
SCHEME=${PW_DOVECOT_PASS_SCHEME:-SHA512-CRYPT}
VUSER=${PW_BENCH_VUSER:-pwbench}   # system account that owns the Maildirs
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONF=$DV/dovecot.conf

# u1..uN, small, big, $PW_BENCH_EXTRA_USERS, and every user that already has mail here
all_users() {
    { seq -f 'u%g' 1 "$NUSERS"; echo small; echo big
      for u in $EXTRA_USERS; do echo "$u"; done
      [[ ! -d $MAIL ]] || find "$MAIL" -mindepth 1 -maxdepth 1 -type d -printf '%f\n'
    } | sort -u
}

log() { echo "[dovecot_imap] $*" >&2; }

need_root() {
    if [[ $(id -u) -ne 0 ]]; then
        echo "must run as root (dovecot master needs it)" >&2
        exit 1
    fi
}

do_install() {
    need_root
    if [[ -x /usr/sbin/dovecot && -x /usr/lib/dovecot/imap && -x /usr/lib/dovecot/pop3 ]]; then
        return 0
    fi
    # Never let the packages start their system services (ports 143, 993, 110, 995).
    local made_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    log "apt-get install dovecot-core dovecot-imapd dovecot-pop3d"
    local pkgs=(dovecot-core dovecot-imapd dovecot-pop3d)
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            "${pkgs[@]}" >"$BASE/apt-imap.log" 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$BASE/apt-imap.log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            "${pkgs[@]}" >>"$BASE/apt-imap.log" 2>&1 \
            || { tail -20 "$BASE/apt-imap.log" >&2; exit 1; }
    fi
    if [[ $made_policy == 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        systemctl disable --now dovecot >/dev/null 2>&1 || true
    fi
}

write_users() {
    # passwd-file; hashes are only recomputed when the user list or scheme changed
    local want=$DV/users.list
    all_users | sort -u >"$want.new"
    echo "scheme=$SCHEME" >>"$want.new"
    if [[ -f $DV/users && -f $want ]] && cmp -s "$want" "$want.new"; then
        rm -f "$want.new"
        return 0
    fi
    local u h tmp=$DV/users.new
    : >"$tmp"
    for u in $(all_users | sort -u); do
        h=$(/usr/bin/doveadm pw -s "$SCHEME" -p "bench-password-$u")
        echo "$u:$h::::::" >>"$tmp"
    done
    chmod 640 "$tmp"
    chgrp dovecot "$tmp"
    mv "$tmp" "$DV/users"
    mv "$want.new" "$want"
}

write_cert() {
    [[ -s $DV/tls/server.crt && -s $DV/tls/server.key ]] && return 0
    mkdir -p "$DV/tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=dovecot.bench.test" \
        -addext "subjectAltName=DNS:dovecot.bench.test,IP:127.0.0.1" \
        -keyout "$DV/tls/server.key" -out "$DV/tls/server.crt" >/dev/null 2>&1
    chmod 600 "$DV/tls/server.key"
}

write_config() {
    mkdir -p "$DV/run" "$DV/state" "$MAIL"
    if ! id "$VUSER" >/dev/null 2>&1; then
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$VUSER"
    fi
    local uid gid
    uid=$(id -u "$VUSER"); gid=$(id -g "$VUSER")
    chown "$VUSER:$VUSER" "$MAIL"
    write_users
    write_cert
    cat >"$CONF.new" <<EOF
# generated by bench/peers/dovecot_imap.sh -- private benchmark instance (IMAP + POP3)
base_dir = $DV/run
state_dir = $DV/state
instance_name = pwbench-dovecot-imap
protocols = imap pop3
listen = 127.0.0.1
log_path = $DV/dovecot.log
info_log_path = $DV/dovecot.log
ssl = yes
ssl_cert = <$DV/tls/server.crt
ssl_key = <$DV/tls/server.key
mail_location = maildir:$MAIL/%n/Maildir
mail_uid = $uid
mail_gid = $gid
first_valid_uid = $uid
last_valid_uid = $uid
first_valid_gid = $gid
auth_username_format = %Ln
auth_mechanisms = plain login
# issue 4: auth cache on
auth_cache_size = 10M
# every connection of the load / idle probe comes from 127.0.0.1
mail_max_userip_connections = 1000
default_process_limit = 1000
default_client_limit = 5000
passdb {
  driver = passwd-file
  args = scheme=$SCHEME $DV/users
}
userdb {
  driver = passwd-file
  args = $DV/users
  default_fields = uid=$uid gid=$gid home=$MAIL/%n
}
service imap-login {
  chroot =
  inet_listener imap {
    address = 127.0.0.1
    port = $IMAP_PORT
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $IMAPS_PORT
    ssl = yes
  }
}
service pop3-login {
  chroot =
  inet_listener pop3 {
    address = 127.0.0.1
    port = $POP3_PORT
  }
  inet_listener pop3s {
    address = 127.0.0.1
    port = $POP3S_PORT
    ssl = yes
  }
}
service anvil {
  chroot =
}
service submission-login {
  chroot =
}
EOF
    mv "$CONF.new" "$CONF"
    for u in $(all_users); do
        if [[ ! -d $MAIL/$u/Maildir/tmp ]]; then
            for d in cur new tmp; do mkdir -p "$MAIL/$u/Maildir/$d"; done
            chown -R "$VUSER:$VUSER" "$MAIL/$u"
        fi
    done
}

master_pid() {
    [[ -f $DV/run/master.pid ]] || return 1
    local p
    p=$(cat "$DV/run/master.pid")
    kill -0 "$p" 2>/dev/null && echo "$p"
}

wait_port() {
    local port=$1 i
    for i in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "port 127.0.0.1:$port did not open" >&2
    tail -5 "$DV/dovecot.log" >&2 2>/dev/null || true
    return 1
}

do_start() {
    need_root
    mkdir -p "$BASE"
    do_install
    write_config
    if ! master_pid >/dev/null; then
        log "starting dovecot (IMAP 127.0.0.1:$IMAP_PORT/$IMAPS_PORT, POP3 $POP3_PORT/$POP3S_PORT)"
        /usr/sbin/dovecot -c "$CONF"
    else
        /usr/bin/doveadm -c "$CONF" reload >/dev/null 2>&1 || true
    fi
    wait_port "$IMAPS_PORT"
    wait_port "$POP3S_PORT"
    # never listen outside loopback
    local mpid
    mpid=$(master_pid)
    if ss -Hltnp 2>/dev/null | grep "pid=$mpid," | awk '{print $4}' | grep -Ev '^127\.'; then
        log "dovecot listens on a non-loopback address (above) -- stopping it"
        do_stop
        exit 1
    fi
    log "up (master pid $mpid)"
}

do_stop() {
    local pid
    pid=$(master_pid) || return 0
    log "stopping dovecot (pid $pid)"
    /usr/sbin/dovecot -c "$CONF" stop 2>/dev/null || kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
}

do_count() {
    local u=${1:?user} n=0 d
    for d in new cur; do
        n=$((n + $(find "$MAIL/$u/Maildir/$d" -maxdepth 1 -type f 2>/dev/null | wc -l)))
    done
    echo "$n"
}

do_prefill() {
    # Leaves USER's INBOX holding exactly N messages (re-filled from scratch otherwise),
    # then lets Dovecot index it, as after a migration (doveadm needs the running instance).
    local user=${1:?user (e.g. u1)} n=${2:?count}
    master_pid >/dev/null || do_start
    local m=$MAIL/$user/Maildir
    if [[ -d $m/cur && $(do_count "$user") == "$n" && -f $m/dovecot.index ]]; then
        log "$user already holds $n messages"
        return 0
    fi
    rm -rf "${MAIL:?}/$user"
    for d in cur new tmp; do mkdir -p "$m/$d"; done
    log "writing $n messages into $m/cur"
    python3 "$HERE/../maildir_fill.py" --maildir "$m" --count "$n" --size 10240 \
        --rcpt "$user@bench.test" 2>&1 | tail -1 >&2
    chown -R "$VUSER:$VUSER" "$MAIL/$user"
    /usr/bin/doveadm -c "$CONF" force-resync -u "$user" INBOX
    /usr/bin/doveadm -c "$CONF" index -u "$user" INBOX
    /usr/bin/doveadm -c "$CONF" mailbox status -u "$user" messages INBOX >&2
}

cmd=${1:-start}
shift || true
case $cmd in
    install) mkdir -p "$BASE"; do_install ;;
    start) do_start ;;
    stop) do_stop ;;
    restart) do_stop; do_start ;;
    status) if p=$(master_pid); then echo "dovecot-imap: running (pid $p)"; else echo "dovecot-imap: stopped"; fi ;;
    count) do_count "$@" ;;
    prefill) do_prefill "$@" ;;
    master-pid) master_pid ;;
    *) echo "usage: $0 {install|start|stop|restart|status|count USER|prefill USER N|master-pid}" >&2; exit 2 ;;
esac
