# shellcheck shell=bash disable=SC2034 # HC_TIMEOUT, HC_LOGDIR: used by the sourcing scripts
# Helpers shared by tests/clusters/{slurm,sge,sshd}.sh. Source it, do not run it.
# The sourcing script sets HC_NAME (used as the log prefix) before sourcing.

set -euo pipefail

HC_NAME=${HC_NAME:-cluster}
# Seconds to wait for any one daemon to come up before failing.
HC_TIMEOUT=${HPCEXEC_CLUSTER_TIMEOUT:-120}
# Our own logs (apt output, daemon wrappers); the daemons' logs are named where they are used.
HC_LOGDIR=${HPCEXEC_CLUSTER_LOGDIR:-/var/log/hpcexec-test}
HC_T0=$(date +%s.%N)

log() { printf '[%s %s] %s\n' "$HC_NAME" "$(date +%H:%M:%S)" "$*" >&2; }

die() {
    printf '[%s %s] ERROR: %s\n' "$HC_NAME" "$(date +%H:%M:%S)" "$*" >&2
    exit 1
}

elapsed() { awk -v a="$HC_T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

need_root() {
    [ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts system daemons)"
    mkdir -p "$HC_LOGDIR"
}

# wait_until SECONDS WHAT HINT CMD...: run CMD (quietly) every 0.2 s until it succeeds.
# On timeout, fail naming WHAT and HINT (which log to read). Fail at once instead if
# HC_WATCH_PID is set and that process ends, or if HC_WATCH_DAEMON="PIDFILE COMM" is set and
# no such daemon is alive (twice in a row, so that a daemon still forking is not missed).
wait_until() {
    local timeout=$1 what=$2 hint=$3 watch=${HC_WATCH_PID:-} daemon=${HC_WATCH_DAEMON:-}
    shift 3
    local deadline=$((SECONDS + timeout)) gone=0
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            die "timed out after ${timeout}s waiting for ${what}; read ${hint}"
        fi
        if [ -n "$watch" ] && ! kill -0 "$watch" 2>/dev/null; then
            die "process $watch exited while waiting for ${what}; read ${hint}"
        fi
        if [ -n "$daemon" ]; then
            # shellcheck disable=SC2086 # "PIDFILE COMM" splits into two arguments
            if daemon_pid $daemon >/dev/null; then gone=0; else gone=$((gone + 1)); fi
            if ((gone >= 2)); then
                die "${daemon#* } exited while waiting for ${what}; read ${hint}"
            fi
        fi
        sleep 0.2
    done
}

# alive PID COMM: PID is a live process (not a zombie: a killed daemon whose parent is
# init may linger as one) whose command name is COMM.
alive() {
    local pid=$1 comm=$2
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ] || return 1
    ! grep -q '^State:[[:space:]]*[ZX]' "/proc/$pid/status" 2>/dev/null
}

# pid_from_file PIDFILE COMM: print the pid in PIDFILE if that process is alive and its
# command name is COMM; otherwise print nothing and fail (a stale pid file is not trusted).
pid_from_file() {
    local pidfile=$1 comm=$2 pid
    [ -s "$pidfile" ] || return 1
    pid=$(head -n1 "$pidfile" | tr -dc '0-9')
    [ -n "$pid" ] && alive "$pid" "$comm" || return 1
    echo "$pid"
}

# daemon_pid PIDFILE COMM: like pid_from_file, falling back to a live process whose
# command name is exactly COMM (for daemons whose pid file was removed or never written).
daemon_pid() {
    local pidfile=$1 comm=$2 pid
    pid_from_file "$pidfile" "$comm" && return 0
    for pid in $(pgrep -x "$comm" || true); do
        if alive "$pid" "$comm"; then
            echo "$pid"
            return 0
        fi
    done
    return 1
}

# stop_pid NAME PID [SECONDS]: SIGTERM, wait, then SIGKILL. Safe if PID is already gone.
stop_pid() {
    local name=$1 pid=$2 timeout=${3:-20}
    local comm
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    local deadline=$((SECONDS + timeout))
    while alive "$pid" "$comm"; do
        if ((SECONDS >= deadline)); then
            log "$name (pid $pid) still running ${timeout}s after SIGTERM: sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            return 0
        fi
        sleep 0.1
    done
}

# stop_daemon NAME PIDFILE COMM [SECONDS]: stop every process found for it, remove the pid file.
stop_daemon() {
    local name=$1 pidfile=$2 comm=$3 timeout=${4:-20} pid tries=0
    while pid=$(daemon_pid "$pidfile" "$comm"); do
        ((++tries <= 5)) || die "cannot stop $name (pid $pid): it survives SIGKILL"
        log "stopping $name (pid $pid)"
        stop_pid "$name" "$pid" "$timeout"
    done
    rm -f "$pidfile"
}

# check_hostname NAME: the daemons find this host by its short name; make it resolve if it
# does not (the only change made outside the daemons' own files, and only when needed).
check_hostname() {
    if ! getent hosts "$1" >/dev/null; then
        log "host name $1 does not resolve: adding '127.0.1.1 $1' to /etc/hosts"
        echo "127.0.1.1 $1" >>/etc/hosts
    fi
}

# ensure_packages "PKG..." BINARY...: install the Debian packages unless every BINARY exists.
# apt-get update runs only if the install fails (stale or missing package lists).
ensure_packages() {
    local pkgs=$1 missing=0 b
    shift
    for b in "$@"; do
        [ -x "$b" ] || missing=1
    done
    ((missing)) || return 0
    export DEBIAN_FRONTEND=noninteractive
    local apt_log="$HC_LOGDIR/apt-$HC_NAME.log"
    local opts=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=600
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    log "installing Debian packages: $pkgs (log: $apt_log)"
    # shellcheck disable=SC2086
    if ! apt-get install "${opts[@]}" $pkgs >>"$apt_log" 2>&1; then
        log "apt-get install failed; running apt-get update and trying again"
        apt-get update -q -o DPkg::Lock::Timeout=600 >>"$apt_log" 2>&1 ||
            die "apt-get update failed; read $apt_log"
        # shellcheck disable=SC2086
        apt-get install "${opts[@]}" $pkgs >>"$apt_log" 2>&1 ||
            die "apt-get install $pkgs failed; read $apt_log"
    fi
    for b in "$@"; do
        [ -x "$b" ] || die "$b is still missing after installing $pkgs; read $apt_log"
    done
    log "packages installed after $(elapsed)s"
}

# write_if_changed FILE MODE: write stdin to FILE if its content differs; return 0 if it
# changed (or was new), 1 if it was already identical.
write_if_changed() {
    local file=$1 mode=$2 tmp
    tmp=$(mktemp "$file.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if [ -f "$file" ] && cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
        chmod "$mode" "$file"
        return 1
    fi
    mv -f "$tmp" "$file"
    return 0
}

# run_command start|stop|status: the script's cmd_start, cmd_stop or cmd_status.
run_command() {
    case $1 in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
    esac
}
