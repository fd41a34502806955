#!/usr/bin/env bash
# Two OpenSSH servers on loopback for tests, with their own host keys and config, leaving the
# system sshd and /etc/ssh/sshd_config alone.
#
#   tests/clusters/sshd.sh start    install (first time), write keys and config, start, check a login
#   tests/clusters/sshd.sh stop     stop both servers (safe when nothing runs)
#   tests/clusters/sshd.sh status   print what runs and where the keys are; exit 0 only if both answer
#
# 127.0.0.1:$HPCEXEC_SSHD_PORT (2222) and 127.0.0.1:$HPCEXEC_SSHD_PORT2 (2223) serve DIFFERENT host
# keys, so a client that trusts only the first one's key must refuse the second (host-key tests).
# Root logs in with the client key $DIR/client_key, whose public half is appended once to
# /root/.ssh/authorized_keys. /root/.ssh/known_hosts and /root/.ssh/config are not touched:
# use -F /dev/null -i $DIR/client_key -o UserKnownHostsFile=$DIR/known_hosts.
set -euo pipefail
HC_NAME=sshd
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DIR=${HPCEXEC_SSHD_DIR:-/var/lib/hpcexec-test-sshd}
PORT=${HPCEXEC_SSHD_PORT:-2222}
PORT2=${HPCEXEC_SSHD_PORT2:-2223}
ADDR=127.0.0.1
CLIENT_KEY=$DIR/client_key
AUTH_KEYS=/root/.ssh/authorized_keys

sshd_conf() {
    local port=$1
    cat <<EOF
# Written by tests/clusters/sshd.sh: a test sshd on loopback. Do not edit by hand.
Port $port
ListenAddress $ADDR
HostKey $DIR/host_key_$port
PidFile $DIR/sshd_$port.pid
AuthorizedKeysFile .ssh/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes yes
# Tests open many connections at once.
MaxStartups 100:30:200
MaxSessions 100
Subsystem sftp internal-sftp
LogLevel INFO
EOF
}

# The pid of the sshd listening for this port's config, if any (never the system sshd).
sshd_pid() {
    local port=$1 pid
    pid_from_file "$DIR/sshd_$port.pid" sshd && return 0
    for pid in $(pgrep -f -- "-f $DIR/sshd_config_$port " || true); do
        if alive "$pid" sshd; then
            echo "$pid"
            return 0
        fi
    done
    return 1
}

# The server at PORT answers and presents its own host key.
serves_key() {
    local port=$1 want
    want=$(awk '{ print $2 }' "$DIR/host_key_$port.pub")
    ssh-keyscan -T 2 -t ed25519 -p "$port" "$ADDR" 2>/dev/null | awk '{ print $3 }' | grep -qxF "$want"
}

client_ssh() {
    local port=$1
    shift
    ssh -F /dev/null -i "$CLIENT_KEY" -o IdentitiesOnly=yes -o BatchMode=yes \
        -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$DIR/known_hosts" \
        -o ConnectTimeout=5 -p "$port" "root@$ADDR" "$@"
}

make_keys() {
    mkdir -p "$DIR"
    chmod 700 "$DIR"
    local port
    for port in "$PORT" "$PORT2"; do
        if [ ! -s "$DIR/host_key_$port" ] || [ ! -s "$DIR/host_key_$port.pub" ]; then
            rm -f "$DIR/host_key_$port" "$DIR/host_key_$port.pub"
            ssh-keygen -q -t ed25519 -N '' -C "hpcexec-test-host-$port" -f "$DIR/host_key_$port"
        fi
    done
    if cmp -s "$DIR/host_key_$PORT.pub" "$DIR/host_key_$PORT2.pub"; then
        die "$DIR/host_key_$PORT and host_key_$PORT2 are the same key; remove one and start again"
    fi
    if [ ! -s "$CLIENT_KEY" ] || [ ! -s "$CLIENT_KEY.pub" ]; then
        rm -f "$CLIENT_KEY" "$CLIENT_KEY.pub"
        ssh-keygen -q -t ed25519 -N '' -C "hpcexec-test-client" -f "$CLIENT_KEY"
    fi
    # known_hosts: each server with its own key. known_hosts_mismatch: the second server
    # claimed to have the first one's key, so a strict client must refuse it.
    local k1 k2
    k1=$(awk '{ print $1, $2 }' "$DIR/host_key_$PORT.pub")
    k2=$(awk '{ print $1, $2 }' "$DIR/host_key_$PORT2.pub")
    printf '[%s]:%s %s\n' "$ADDR" "$PORT" "$k1" "$ADDR" "$PORT2" "$k2" \
        "localhost" "$PORT" "$k1" "localhost" "$PORT2" "$k2" >"$DIR/known_hosts"
    printf '[%s]:%s %s\n' "$ADDR" "$PORT2" "$k1" "localhost" "$PORT2" "$k1" \
        >"$DIR/known_hosts_mismatch"
    # Authorise the client key for root, once.
    mkdir -p /root/.ssh
    chmod 700 /root/.ssh
    touch "$AUTH_KEYS"
    chmod 600 "$AUTH_KEYS"
    if ! grep -qxF "$(cat "$CLIENT_KEY.pub")" "$AUTH_KEYS"; then
        # Keep the file's last line intact if it lacks a newline.
        if [ -s "$AUTH_KEYS" ] && [ "$(tail -c1 "$AUTH_KEYS" | od -An -c | tr -d ' ')" != '\n' ]; then
            echo >>"$AUTH_KEYS"
        fi
        cat "$CLIENT_KEY.pub" >>"$AUTH_KEYS"
        log "added $CLIENT_KEY.pub to $AUTH_KEYS"
    fi
}

start_one() {
    local port=$1 cfg=$DIR/sshd_config_$1 logf=$DIR/sshd_$1.log pid
    if write_if_changed "$cfg" 600 < <(sshd_conf "$port"); then
        log "wrote $cfg"
        stop_one "$port"
    fi
    /usr/sbin/sshd -t -f "$cfg" 2>"$DIR/sshd_$port.check" ||
        die "sshd rejects $cfg: $(cat "$DIR/sshd_$port.check")"
    if pid=$(sshd_pid "$port") && serves_key "$port"; then
        log "sshd on $ADDR:$port already running (pid $pid)"
        return
    fi
    stop_one "$port"
    if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
        die "port $port is taken by another program: $(ss -Hltnp "sport = :$port" | head -n1)"
    fi
    log "starting sshd on $ADDR:$port (log: $logf)"
    /usr/sbin/sshd -f "$cfg" -E "$logf" || die "sshd on port $port failed to start; read $logf"
    HC_WATCH_DAEMON="$DIR/sshd_$port.pid sshd" wait_until "$HC_TIMEOUT" \
        "sshd on $ADDR:$port to present its host key (ssh-keyscan)" \
        "$logf" serves_key "$port"
}

stop_one() {
    local port=$1 pid tries=0
    while pid=$(sshd_pid "$port"); do
        ((++tries <= 5)) || die "cannot stop the sshd on port $port (pid $pid)"
        log "stopping sshd on port $port (pid $pid)"
        stop_pid sshd "$pid" 10
    done
    rm -f "$DIR/sshd_$port.pid"
}

print_paths() {
    cat <<EOF
client key (root):     $CLIENT_KEY  (public: $CLIENT_KEY.pub, in $AUTH_KEYS)
host key $ADDR:$PORT:  $DIR/host_key_$PORT.pub
host key $ADDR:$PORT2:  $DIR/host_key_$PORT2.pub  (a different key)
known_hosts:           $DIR/known_hosts  (both servers, right keys)
known_hosts_mismatch:  $DIR/known_hosts_mismatch  (port $PORT2 with port $PORT's key)
try: ssh -F /dev/null -i $CLIENT_KEY -o UserKnownHostsFile=$DIR/known_hosts -p $PORT root@$ADDR true
EOF
}

cmd_start() {
    need_root
    ensure_packages "openssh-server openssh-client" /usr/sbin/sshd /usr/bin/ssh /usr/bin/ssh-keygen \
        /usr/bin/ssh-keyscan
    mkdir -p /run/sshd
    chmod 755 /run/sshd
    make_keys
    start_one "$PORT"
    start_one "$PORT2"
    local out port
    for port in "$PORT" "$PORT2"; do
        out=$(client_ssh "$port" echo ok 2>&1) || true
        if [ "$out" != ok ]; then
            die "root cannot log in to $ADDR:$port with $CLIENT_KEY: $out; read $DIR/sshd_$port.log"
        fi
    done
    print_paths
    log "sshd is up on $ADDR:$PORT and $ADDR:$PORT2; start took $(elapsed)s"
}

cmd_stop() {
    need_root
    stop_one "$PORT"
    stop_one "$PORT2"
    log "sshd stopped after $(elapsed)s"
}

cmd_status() {
    local rc=0 port pid
    for port in "$PORT" "$PORT2"; do
        if pid=$(sshd_pid "$port") && serves_key "$port"; then
            echo "sshd $ADDR:$port: running (pid $pid)"
        else
            echo "sshd $ADDR:$port: not running"
            rc=3
        fi
    done
    [ -s "$CLIENT_KEY" ] && print_paths
    return "$rc"
}

run_command "${1:-}"
