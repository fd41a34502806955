#!/usr/bin/env bash
# Two OpenSSH servers on loopback for tests, with their own host keys and config, leaving the
# system sshd and /etc/ssh/sshd_config alone.
#
#   tests/clusters/sshd.sh start    install (first time), write keys and config, start, check a login
#   tests/clusters/sshd.sh stop     stop both servers (safe when nothing runs)
#   tests/clusters/sshd.sh status   print what runs and where the keys are; exit 0 only if both answer
#
# Two servers on 127.0.0.1 serve DIFFERENT host keys, so a client that trusts only the first
# one's key must refuse the second (host-key tests). Their ports: $HPCEXEC_SSHD_PORT and
# $HPCEXEC_SSHD_PORT2 when set (start fails if another program holds one); else the ones the
# last start used, or 2222 and 2223, when free; else free ports picked here. start writes them
# to $DIR/ports ("PORT PORT2"), where tests read them (tests/sshtest.py). A second start with
# the servers running reuses them. Root logs in with the client key $DIR/client_key, whose
# public half is appended once to /root/.ssh/authorized_keys (and removed by stop).
# /root/.ssh/known_hosts and /root/.ssh/config are not touched:
# use -F /dev/null -i $DIR/client_key -o UserKnownHostsFile=$DIR/known_hosts.
set -euo pipefail
HC_NAME=sshd
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DIR=${HPCEXEC_SSHD_DIR:-/var/lib/hpcexec-test-sshd}
DEFAULT_PORT=2222
DEFAULT_PORT2=2223
PORTS_FILE=$DIR/ports
ADDR=127.0.0.1
CLIENT_KEY=$DIR/client_key
AUTH_KEYS=/root/.ssh/authorized_keys
FREE_RANGE=20000-29999 # below Linux's ephemeral ports (32768-60999): no outgoing socket has one

# The ports the last start wrote (PORT PORT2), or the defaults.
saved_ports() {
    local p1 p2
    if [ -s "$PORTS_FILE" ] && read -r p1 p2 <"$PORTS_FILE" &&
        [[ $p1 =~ ^[0-9]+$ && $p2 =~ ^[0-9]+$ ]]; then
        echo "$p1 $p2"
    else
        echo "$DEFAULT_PORT $DEFAULT_PORT2"
    fi
}

# Every port a server of this directory was configured for, PORT and PORT2 included.
known_ports() {
    local cfg
    {
        echo "$PORT"
        echo "$PORT2"
        for cfg in "$DIR"/sshd_config_*; do
            [ -e "$cfg" ] && echo "${cfg##*_}"
        done
    } | grep -xE '[0-9]+' | sort -un
}

# PORT and PORT2 for stop and status: the variables, else what start wrote, else the defaults.
read -r SAVED_PORT SAVED_PORT2 < <(saved_ports)
PORT=${HPCEXEC_SSHD_PORT:-$SAVED_PORT}
PORT2=${HPCEXEC_SSHD_PORT2:-$SAVED_PORT2}

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

# A program listens on PORT (so sshd cannot: connections left from an sshd that was killed
# do not count, sshd binds with SO_REUSEADDR).
listening() {
    ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

# Some socket on this machine uses PORT, in any TCP state (ports picked anew avoid those too).
in_use() {
    ss -Htan "sport = :$1" 2>/dev/null | grep -q .
}

# This directory's sshd serves PORT.
ours() {
    [ -s "$DIR/host_key_$1.pub" ] && sshd_pid "$1" >/dev/null && serves_key "$1"
}

# choose_port VAR PREFERRED... : the port VAR names (fail if another program holds it), else
# the first PREFERRED port that is free or already ours, else a free one. Never $EXCLUDE.
choose_port() {
    local var=$1 p holder
    shift
    if [ -n "${!var:-}" ]; then
        p=${!var}
        [[ $p =~ ^[0-9]+$ ]] && ((p > 0 && p < 65536)) || die "$var=$p is not a port number"
        [ "$p" != "${EXCLUDE:-}" ] || die "$var=$p is the other server's port too; give them different ports"
        if ! ours "$p" && listening "$p"; then
            holder=$(ss -Hltnp "sport = :$p" | head -n1)
            die "port $p (from $var) is taken by another program: ${holder:-a socket in use}; set $var to a free port, or unset it to let sshd.sh pick one"
        fi
        echo "$p"
        return
    fi
    for p in "$@"; do
        if [ -n "$p" ] && [ "$p" != "${EXCLUDE:-}" ] && { ours "$p" || ! listening "$p"; }; then
            echo "$p"
            return
        fi
    done
    for p in $(shuf -i "$FREE_RANGE" -n 200); do
        if [ "$p" != "${EXCLUDE:-}" ] && ! in_use "$p"; then
            log "port(s) $(printf '%s\n' "$@" | sort -u | xargs) taken: using port $p (set $var to choose one)"
            echo "$p"
            return
        fi
    done
    die "no free port found in $FREE_RANGE; set $var to a free port"
}

make_host_key() {
    local port=$1
    if [ ! -s "$DIR/host_key_$port" ] || [ ! -s "$DIR/host_key_$port.pub" ]; then
        rm -f "$DIR/host_key_$port" "$DIR/host_key_$port.pub"
        ssh-keygen -q -t ed25519 -N '' -C "hpcexec-test-host-$port" -f "$DIR/host_key_$port"
    fi
}

make_client_key() {
    mkdir -p "$DIR"
    chmod 700 "$DIR"
    if [ ! -s "$CLIENT_KEY" ] || [ ! -s "$CLIENT_KEY.pub" ]; then
        rm -f "$CLIENT_KEY" "$CLIENT_KEY.pub"
        ssh-keygen -q -t ed25519 -N '' -C "hpcexec-test-client" -f "$CLIENT_KEY"
    fi
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

# Take this directory's client key out of root's authorized keys (replacing the file at once).
unauthorise_client_key() {
    [ -s "$CLIENT_KEY.pub" ] && [ -f "$AUTH_KEYS" ] || return 0
    grep -qxF "$(cat "$CLIENT_KEY.pub")" "$AUTH_KEYS" || return 0
    local tmp
    tmp=$(mktemp "$AUTH_KEYS.XXXXXX")
    grep -vxF "$(cat "$CLIENT_KEY.pub")" "$AUTH_KEYS" >"$tmp" || true
    chmod 600 "$tmp"
    mv -f "$tmp" "$AUTH_KEYS"
    log "removed $CLIENT_KEY.pub from $AUTH_KEYS"
}

# known_hosts: each server with its own key. known_hosts_mismatch: the second server claimed
# to have the first one's key, so a strict client must refuse it. ports: where tests look.
write_client_files() {
    if cmp -s "$DIR/host_key_$PORT.pub" "$DIR/host_key_$PORT2.pub"; then
        die "$DIR/host_key_$PORT and host_key_$PORT2 are the same key; remove one and start again"
    fi
    local k1 k2
    k1=$(awk '{ print $1, $2 }' "$DIR/host_key_$PORT.pub")
    k2=$(awk '{ print $1, $2 }' "$DIR/host_key_$PORT2.pub")
    printf '[%s]:%s %s\n' "$ADDR" "$PORT" "$k1" "$ADDR" "$PORT2" "$k2" \
        "localhost" "$PORT" "$k1" "localhost" "$PORT2" "$k2" | write_if_changed "$DIR/known_hosts" 644 || true
    printf '[%s]:%s %s\n' "$ADDR" "$PORT2" "$k1" "localhost" "$PORT2" "$k1" |
        write_if_changed "$DIR/known_hosts_mismatch" 644 || true
    echo "$PORT $PORT2" | write_if_changed "$PORTS_FILE" 644 || true
}

# Start the server for PORT unless it runs. Returns 1 (after stopping nothing of anyone else's)
# if another program took the port before sshd could bind it.
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
    listening "$port" && return 1
    log "starting sshd on $ADDR:$port (log: $logf)"
    if ! /usr/sbin/sshd -f "$cfg" -E "$logf"; then
        if listening "$port" || tail -n 3 "$logf" | grep -q "Address already in use"; then
            return 1
        fi
        die "sshd on port $port failed to start; read $logf"
    fi
    HC_WATCH_DAEMON="$DIR/sshd_$port.pid sshd" wait_until "$HC_TIMEOUT" \
        "sshd on $ADDR:$port to present its host key (ssh-keyscan)" \
        "$logf" serves_key "$port"
}

# serve VAR PREFERRED...: bring up one server (see choose_port) and print its port; pick
# again if another program takes the chosen port first.
serve() {
    local var=$1 port tries=0
    shift
    while :; do
        port=$(choose_port "$var" "$@") || exit 1
        make_host_key "$port"
        if start_one "$port"; then
            echo "$port"
            return
        fi
        if [ -n "${!var:-}" ] || ((++tries >= 5)); then
            die "port $port (${!var:+from }$var) was taken by another program while sshd started; set $var to a free port"
        fi
        log "port $port was taken while sshd started; picking another"
        set --
    done
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
ports:                 $PORTS_FILE  ("$PORT $PORT2"; HPCEXEC_SSHD_PORT, HPCEXEC_SSHD_PORT2 choose them)
try: ssh -F /dev/null -i $CLIENT_KEY -o UserKnownHostsFile=$DIR/known_hosts -p $PORT root@$ADDR true
EOF
}

cmd_start() {
    need_root
    ensure_packages "openssh-server openssh-client" /usr/sbin/sshd /usr/bin/ssh /usr/bin/ssh-keygen \
        /usr/bin/ssh-keyscan
    mkdir -p /run/sshd
    chmod 755 /run/sshd
    make_client_key
    PORT=$(EXCLUDE='' serve HPCEXEC_SSHD_PORT "$SAVED_PORT" "$DEFAULT_PORT") || exit 1
    PORT2=$(EXCLUDE=$PORT serve HPCEXEC_SSHD_PORT2 "$SAVED_PORT2" "$DEFAULT_PORT2") || exit 1
    local port
    for port in $(known_ports); do # servers of an earlier start on other ports
        if [ "$port" != "$PORT" ] && [ "$port" != "$PORT2" ]; then
            stop_one "$port"
        fi
    done
    write_client_files
    local out
    for port in "$PORT" "$PORT2"; do
        out=$(client_ssh "$port" echo ok 2>&1) || true
        if [ "$out" != ok ]; then
            die "root cannot log in to $ADDR:$port with $CLIENT_KEY: $out; read $DIR/sshd_$port.log"
        fi
    done
    print_paths
    log "sshd is up on $ADDR:$PORT and $ADDR:$PORT2 (written to $PORTS_FILE); start took $(elapsed)s"
}

cmd_stop() {
    need_root
    local port
    for port in $(known_ports); do
        stop_one "$port"
    done
    unauthorise_client_key
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
