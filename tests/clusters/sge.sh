#!/usr/bin/env bash
# A one-host Grid Engine 8.1.9 cluster (Debian's gridengine packages) on this machine, for tests.
#
#   tests/clusters/sge.sh start    install (first time), configure, start, wait until usable
#   tests/clusters/sge.sh stop     stop both daemons and their jobs (safe when nothing runs)
#   tests/clusters/sge.sh status   print what runs; exit 0 only if the queue takes jobs
#
# Daemons: sge_qmaster (runs as sgeadmin) and sge_execd. Queue all.q on `hostname -s` with
# 16 slots (jobs share the real cores), root may submit (min_uid/min_gid 0), the scheduler
# runs every second and accounting (qacct) is written within about a second of a job's end.
set -euo pipefail
HC_NAME=sge
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
H=$(hostname -s)
COMMON=$SGE_ROOT/$SGE_CELL/common
QMASTER_SPOOL=/var/spool/gridengine/qmaster
EXECD_SPOOL=/var/spool/gridengine/execd
RUNDIR=/run/gridengine
QMASTER_PID=$QMASTER_SPOOL/qmaster.pid
# sge_execd writes its pid where this says (sge_qmaster ignores its SGE_MASTER_PIDFILE).
export SGE_EXECD_PIDFILE=$RUNDIR/execd.pid
QMASTER_LOG=$QMASTER_SPOOL/messages
# execd spools under the name its address resolves back to (often localhost, not $H).
EXECD_LOG="$EXECD_SPOOL/*/messages"
CONFDIR=$HC_LOGDIR/sge-conf
SLOTS=${HPCEXEC_SGE_SLOTS:-16}
PKGS="gridengine-master gridengine-exec gridengine-client"
BINS=(/usr/sbin/sge_qmaster /usr/sbin/sge_execd /usr/bin/qsub /usr/bin/qstat /usr/bin/qacct
    /usr/bin/qconf /usr/bin/qmod)

queue_conf() {
    cat <<EOF
qname                 all.q
hostlist              $H
seq_no                0
load_thresholds       NONE
suspend_thresholds    NONE
nsuspend              1
suspend_interval      00:05:00
priority              0
min_cpu_interval      00:05:00
processors            UNDEFINED
qtype                 BATCH INTERACTIVE
ckpt_list             NONE
pe_list               NONE
rerun                 FALSE
slots                 $SLOTS
tmpdir                /tmp
shell                 /bin/bash
prolog                NONE
epilog                NONE
shell_start_mode      posix_compliant
starter_method        NONE
suspend_method        NONE
resume_method         NONE
terminate_method      NONE
notify                00:00:60
owner_list            NONE
user_lists            NONE
xuser_lists           NONE
subordinate_list      NONE
complex_values        NONE
projects              NONE
xprojects             NONE
calendar              NONE
initial_state         default
s_rt                  INFINITY
h_rt                  INFINITY
s_cpu                 INFINITY
h_cpu                 INFINITY
s_fsize               INFINITY
h_fsize               INFINITY
s_data                INFINITY
h_data                INFINITY
s_stack               INFINITY
h_stack               INFINITY
s_core                INFINITY
h_core                INFINITY
s_rss                 INFINITY
h_rss                 INFINITY
s_vmem                INFINITY
h_vmem                INFINITY
EOF
}

# The names this host is known by: `hostname -s` first, then what its address resolves back
# to (on Debian often "localhost", which qmaster would otherwise refuse as a different host).
host_aliases_line() {
    local names=("$H") ip n extra
    ip=$(getent ahostsv4 "$H" | awk '{ print $1; exit }')
    extra=$(
        [ -n "$ip" ] && getent hosts "$ip" | awk '{ for (i = 2; i <= NF; i++) print $i }'
        hostname -f 2>/dev/null || true
        echo localhost
    )
    for n in $extra; do
        n=${n%.}
        [[ " ${names[*]} " == *" $n "* ]] || names+=("$n")
    done
    echo "${names[*]}"
}

qmaster_ok() { qconf -sh >/dev/null 2>&1; }
queue_line() { qstat -f -q "all.q@$H" 2>/dev/null | awk -v q="all.q@$H" '$1 == q'; }
# The queue instance takes jobs: execd reports load and no state flag (a, u, E, d, ...) is set.
queue_usable() { queue_line | awk 'NF == 5 { ok = 1 } END { exit !ok }'; }

# Files read by qmaster, execd and the clients at start-up; restart the daemons if they change.
configure_host_files() {
    local changed=1
    write_if_changed "$COMMON/act_qmaster" 644 <<<"$H" && changed=0
    write_if_changed "$COMMON/host_aliases" 644 <<<"$(host_aliases_line)" && changed=0
    chown sgeadmin:sgeadmin "$COMMON/act_qmaster" "$COMMON/host_aliases"
    if ((changed == 0)); then
        log "wrote $COMMON/act_qmaster ($H) and host_aliases ($(cat "$COMMON/host_aliases"))"
        stop_execd
        stop_qmaster
    fi
}

start_qmaster() {
    mkdir -p "$RUNDIR"
    chown sgeadmin:sgeadmin "$RUNDIR"
    if pid_from_file "$QMASTER_PID" sge_qmaster >/dev/null && qmaster_ok; then
        log "sge_qmaster already running"
        return
    fi
    stop_qmaster
    # A killed qmaster leaves its lock file; with no qmaster running it is stale.
    rm -f "$QMASTER_SPOOL/lock"
    log "starting sge_qmaster (log: $QMASTER_LOG)"
    /usr/sbin/sge_qmaster ||
        die "sge_qmaster failed to start; read $QMASTER_LOG and /tmp/qmaster_messages*"
    HC_WATCH_DAEMON="$QMASTER_PID sge_qmaster" wait_until "$HC_TIMEOUT" \
        "sge_qmaster to answer (qconf -sh)" \
        "$QMASTER_LOG and /tmp/qmaster_messages*" qmaster_ok
    # A running execd takes about 30 s to notice a new qmaster; restarted, it registers at
    # once (its jobs keep running and are picked up again).
    RESTART_EXECD=1
}

# conf_set FILE KEY VALUE: set "KEY VALUE" in a qconf dump (one "key value" per line).
conf_set() {
    local file=$1 key=$2 value=$3
    if grep -q "^${key}[[:space:]]" "$file"; then
        sed -i "s|^${key}[[:space:]].*|$key $value|" "$file"
    else
        echo "$key $value" >>"$file"
    fi
}

# Normalise a qconf dump for comparison: one space between fields, no continuation lines.
conf_norm() { sed -e ':a' -e '/\\$/N; s/\\\n[[:space:]]*//; ta' "$1" | awk '{ $1 = $1; print }'; }

configure_qmaster() {
    mkdir -p "$CONFDIR"
    local f
    if ! qconf -sh 2>/dev/null | grep -qx "$H"; then
        qconf -ah "$H" >/dev/null 2>&1 || die "qconf -ah $H failed; read $QMASTER_LOG"
    fi
    if ! qconf -ss 2>/dev/null | grep -qx "$H"; then
        log "adding $H as submit host"
        qconf -as "$H" >/dev/null 2>&1 || die "qconf -as $H failed; read $QMASTER_LOG"
    fi

    # Global configuration: root may run jobs; accounting written at once (qacct).
    f=$CONFDIR/global # qconf -Mconf takes the configuration's name from the file name
    qconf -sconf global >"$f.old"
    conf_norm "$f.old" >"$f"
    conf_set "$f" min_uid 0
    conf_set "$f" min_gid 0
    # Jobs start as plain shells, not login shells that read the user's profile and rc
    # files (root's runs pyenv's rehash, whose lock outlives a shell killed mid-way).
    conf_set "$f" login_shells csh
    conf_set "$f" reporting_params \
        "accounting=true reporting=false flush_time=00:00:01 joblog=false sharelog=00:00:00 accounting_flush_time=00:00:00"
    if [ "$(conf_norm "$f")" != "$(conf_norm "$f.old")" ]; then
        log "loading global configuration (min_uid 0, min_gid 0, no login shells, accounting flushed at once)"
        qconf -Mconf "$f" >/dev/null 2>&1 || die "qconf -Mconf $f failed; read $QMASTER_LOG"
        GLOBAL_CHANGED=1
    fi

    # Scheduler: run every second, and at once on each submit and job end.
    f=$CONFDIR/sched
    qconf -ssconf >"$f.old"
    conf_norm "$f.old" >"$f"
    conf_set "$f" schedule_interval 0:0:1
    conf_set "$f" flush_submit_sec 1
    conf_set "$f" flush_finish_sec 1
    if [ "$(conf_norm "$f")" != "$(conf_norm "$f.old")" ]; then
        log "loading scheduler configuration (schedule_interval 0:0:1)"
        qconf -Msconf "$f" >/dev/null 2>&1 || die "qconf -Msconf $f failed; read $QMASTER_LOG"
    fi

    # Exec host and queue.
    if ! qconf -sel 2>/dev/null | grep -qx "$H"; then
        printf '%s\n' "hostname $H" "load_scaling NONE" "complex_values NONE" \
            "user_lists NONE" "xuser_lists NONE" "projects NONE" "xprojects NONE" \
            "usage_scaling NONE" "report_variables NONE" >"$CONFDIR/exechost"
        log "adding $H as execution host"
        qconf -Ae "$CONFDIR/exechost" >/dev/null 2>&1 || die "qconf -Ae failed; read $QMASTER_LOG"
    fi
    queue_conf >"$CONFDIR/all.q"
    if qconf -sql 2>/dev/null | grep -qx all.q; then
        qconf -sq all.q >"$CONFDIR/all.q.old"
        if [ "$(conf_norm "$CONFDIR/all.q")" != "$(conf_norm "$CONFDIR/all.q.old")" ]; then
            log "updating queue all.q ($SLOTS slots on $H)"
            qconf -Mq "$CONFDIR/all.q" >/dev/null 2>&1 || die "qconf -Mq failed; read $QMASTER_LOG"
        fi
    else
        log "adding queue all.q ($SLOTS slots on $H)"
        qconf -Aq "$CONFDIR/all.q" >/dev/null 2>&1 || die "qconf -Aq failed; read $QMASTER_LOG"
    fi
}

start_execd() {
    if ((${GLOBAL_CHANGED:-0} || ${RESTART_EXECD:-0})); then
        stop_execd
    fi
    if pid_from_file "$SGE_EXECD_PIDFILE" sge_execd >/dev/null; then
        log "sge_execd already running"
    else
        stop_execd
        mkdir -p "$EXECD_SPOOL"
        chown sgeadmin:sgeadmin "$EXECD_SPOOL"
        log "starting sge_execd (log: $EXECD_LOG)"
        /usr/sbin/sge_execd ||
            die "sge_execd failed to start; read $EXECD_LOG and /tmp/execd_messages*"
    fi
    # Clear an error state (E) left by an earlier failed job, and enable a disabled queue.
    local deadline=$((SECONDS + HC_TIMEOUT)) states
    until queue_usable; do
        states=$(queue_line | awk 'NF >= 6 { print $6 }')
        if [[ $states == *E* ]]; then
            log "queue all.q@$H is in error state ($states): qmod -c"
            qmod -c "all.q@$H" >/dev/null 2>&1 || true
        fi
        if [[ $states == *d* ]]; then
            log "queue all.q@$H is disabled ($states): qmod -e"
            qmod -e "all.q@$H" >/dev/null 2>&1 || true
        fi
        if ! daemon_pid "$SGE_EXECD_PIDFILE" sge_execd >/dev/null; then
            die "sge_execd exited while waiting for queue all.q@$H; read $EXECD_LOG"
        fi
        if ((SECONDS >= deadline)); then
            die "timed out after ${HC_TIMEOUT}s waiting for queue all.q@$H to take jobs" \
                "(qstat -f: '$(queue_line)'); read $EXECD_LOG and $QMASTER_LOG"
        fi
        sleep 0.5
    done
}

# SIGTERM, not qconf -ke: that reaches no execd still bound to a qmaster that was killed.
stop_execd() { stop_daemon sge_execd "$SGE_EXECD_PIDFILE" sge_execd; }

stop_qmaster() {
    if pid_from_file "$QMASTER_PID" sge_qmaster >/dev/null && qmaster_ok; then
        qconf -km >/dev/null 2>&1 || true
        local deadline=$((SECONDS + 15))
        while daemon_pid "$QMASTER_PID" sge_qmaster >/dev/null && ((SECONDS < deadline)); do
            sleep 0.2
        done
    fi
    stop_daemon sge_qmaster "$QMASTER_PID" sge_qmaster
}

cmd_start() {
    need_root
    ensure_packages "$PKGS" "${BINS[@]}"
    check_hostname "$H"
    configure_host_files
    start_qmaster
    configure_qmaster
    start_execd
    log "Grid Engine is up: queue all.q@$H ($SLOTS slots); start took $(elapsed)s"
}

cmd_stop() {
    need_root
    [ -x /usr/sbin/sge_qmaster ] || {
        log "Grid Engine is not installed: nothing to stop"
        return 0
    }
    # Delete every job, so that none goes on running without the daemons.
    if qmaster_ok && [ -n "$(qstat -u '*' 2>/dev/null)" ]; then
        log "deleting all jobs"
        qdel -f -u '*' >/dev/null 2>&1 || true
        local deadline=$((SECONDS + 20))
        while [ -n "$(qstat -u '*' 2>/dev/null)" ] && ((SECONDS < deadline)); do
            sleep 0.2
        done
    fi
    stop_execd
    # Jobs outlive sge_execd by design; a stopped test cluster runs no jobs.
    local pid
    for pid in $(pgrep -x sge_shepherd || true); do
        stop_pid sge_shepherd "$pid" 5
    done
    stop_qmaster
    log "Grid Engine stopped after $(elapsed)s"
}

cmd_status() {
    local rc=0 pid
    if pid=$(daemon_pid "$QMASTER_PID" sge_qmaster); then
        echo "sge_qmaster: running (pid $pid)"
    else
        echo "sge_qmaster: not running"
        rc=3
    fi
    if pid=$(daemon_pid "$SGE_EXECD_PIDFILE" sge_execd); then
        echo "sge_execd: running (pid $pid)"
    else
        echo "sge_execd: not running"
        rc=3
    fi
    if ((rc == 0)) && queue_usable; then
        echo "queue: $(queue_line)"
    else
        echo "queue all.q@$H: not usable"
        rc=3
    fi
    return "$rc"
}

run_command "${1:-}"
