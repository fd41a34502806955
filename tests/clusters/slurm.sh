#!/usr/bin/env bash
# A one-node SLURM 22.05 cluster with accounting (sacct) on this machine, for tests.
#
#   tests/clusters/slurm.sh start    install (first time), configure, start, wait until usable
#   tests/clusters/slurm.sh stop     stop every daemon (safe when nothing runs)
#   tests/clusters/slurm.sh status   print what runs; exit 0 only if the cluster is usable
#
# Daemons: munged, mariadbd (via mysqld_safe), slurmdbd, slurmctld, slurmd. Run as root.
# Cluster "local", partition "debug", one node named after `hostname -s` declaring 16 CPUs
# (jobs share the real cores) so that tests do not queue behind each other.
set -euo pipefail
HC_NAME=slurm
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

H=$(hostname -s)
CLUSTER=local
SLURM_CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
SLURM_LOGDIR=/var/log/slurm
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
DBD_PID=/run/slurmdbd.pid
MUNGE_PID=/run/munge/munged.pid
MYSQL_LOG=/var/log/mysql/error.log
DB_PASS=hpcexec-test-only
PKGS="slurm-wlm slurmdbd munge mariadb-server"
BINS=(/usr/sbin/slurmctld /usr/sbin/slurmd /usr/sbin/slurmdbd /usr/sbin/munged
    /usr/bin/mysqld_safe /usr/bin/sbatch /usr/bin/sacct /usr/bin/sacctmgr)

slurm_conf() {
    cat <<EOF
# Written by tests/clusters/slurm.sh: a one-node test cluster. Do not edit by hand.
ClusterName=$CLUSTER
SlurmctldHost=$H
AuthType=auth/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmUser=root
SchedulerType=sched/backfill
# Test tuning: no 3 s batch scheduling delay.
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
# Memory is a consumable resource, so a job's --mem is its limit (jobs that give none get
# DefMemPerCPU per CPU); with JobAcctGatherParams=OverMemoryKill below, a job that passes it is
# killed and ends OUT_OF_MEMORY, as on a production cluster.
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
# Limits of associations and QOS are enforced, as on a production cluster: a submission past a
# QOS's MaxSubmitJobsPerUser is refused by slurmctld itself (tests/backends/
# test_slurm_limits_live.py). Every user who submits needs an association (root has one).
AccountingStorageEnforce=associations,limits,qos
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
# Without cgroups, memory limits are enforced by the accounting poll (every second): a step
# whose processes' resident memory passes the job's --mem is killed.
JobAcctGatherParams=OverMemoryKill
MinJobAge=300
# Seconds between SIGTERM and SIGKILL at a time limit or scancel (default 30).
KillWait=5
SlurmctldLogFile=$SLURM_LOGDIR/slurmctld.log
SlurmdLogFile=$SLURM_LOGDIR/slurmd.log
# Test tuning: declare more CPUs than the machine has; slurmd accepts it with config_overrides.
SlurmdParameters=config_overrides
NodeName=$H CPUs=16 RealMemory=64000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

dbd_conf() {
    cat <<EOF
# Written by tests/clusters/slurm.sh. Do not edit by hand.
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
LogFile=$SLURM_LOGDIR/slurmdbd.log
PidFile=$DBD_PID
EOF
}

munge_ok() { munge -n </dev/null | unmunge >/dev/null 2>&1; }
mysql_ok() { mysqladmin --connect-timeout=2 ping >/dev/null 2>&1; }
dbd_ok() { sacctmgr -n -P list cluster format=cluster >/dev/null 2>&1; }

start_munge() {
    if [ ! -s /etc/munge/munge.key ]; then
        log "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    if pid_from_file "$MUNGE_PID" munged >/dev/null && munge_ok; then
        log "munged already running"
        return
    fi
    stop_daemon munged "$MUNGE_PID" munged
    log "starting munged"
    # --force: start even if a killed munged left its socket behind.
    runuser -u munge -- /usr/sbin/munged --force ||
        die "munged failed to start; read /var/log/munge/munged.log"
    HC_WATCH_DAEMON="$MUNGE_PID munged" wait_until "$HC_TIMEOUT" \
        "munged to answer (munge -n | unmunge)" /var/log/munge/munged.log munge_ok
}

start_mariadb() {
    mkdir -p /run/mysqld /var/log/mysql
    chown mysql:mysql /run/mysqld /var/log/mysql
    if mysql_ok; then
        log "mariadb already running"
    else
        # A killed server leaves mysqld_safe or mariadbd behind only if it is still alive;
        # stop such half-dead leftovers before starting a new one.
        stop_daemon mysqld_safe /nonexistent mysqld_safe
        stop_daemon mariadbd /run/mysqld/mysqld.pid mariadbd 60
        if [ ! -d /var/lib/mysql/mysql ]; then
            log "initialising the MariaDB data directory"
            mariadb-install-db --user=mysql >>"$MYSQL_LOG" 2>&1 ||
                die "mariadb-install-db failed; read $MYSQL_LOG"
        fi
        log "starting mariadb (log: $MYSQL_LOG)"
        setsid nohup mysqld_safe --user=mysql --skip-syslog --log-error="$MYSQL_LOG" \
            >>"$HC_LOGDIR/mysqld_safe.out" 2>&1 </dev/null &
        HC_WATCH_PID=$! wait_until "$HC_TIMEOUT" "mariadb to answer (mysqladmin ping)" \
            "$MYSQL_LOG" mysql_ok
    fi
    mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
        ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';" ||
        die "could not create the slurm database and user in mariadb; read $MYSQL_LOG"
}

# Write both config files (sacctmgr reads slurm.conf too); stop the daemons whose file changed.
configure() {
    mkdir -p /etc/slurm /var/spool/slurmd /var/spool/slurmctld "$SLURM_LOGDIR"
    if write_if_changed "$SLURM_CONF" 644 < <(slurm_conf); then
        log "wrote $SLURM_CONF"
        stop_slurm_daemons
    fi
    if write_if_changed "$DBD_CONF" 600 < <(dbd_conf); then
        log "wrote $DBD_CONF"
        stop_daemon slurmdbd "$DBD_PID" slurmdbd
    fi
}

start_slurmdbd() {
    if pid_from_file "$DBD_PID" slurmdbd >/dev/null && dbd_ok; then
        log "slurmdbd already running"
    else
        stop_daemon slurmdbd "$DBD_PID" slurmdbd
        log "starting slurmdbd (log: $SLURM_LOGDIR/slurmdbd.log)"
        /usr/sbin/slurmdbd || die "slurmdbd failed to start; read $SLURM_LOGDIR/slurmdbd.log"
        HC_WATCH_DAEMON="$DBD_PID slurmdbd" wait_until "$HC_TIMEOUT" \
            "slurmdbd to answer (sacctmgr list cluster)" \
            "$SLURM_LOGDIR/slurmdbd.log" dbd_ok
    fi
    if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
        log "registering cluster $CLUSTER in slurmdbd"
        sacctmgr -i add cluster "$CLUSTER" >/dev/null ||
            die "sacctmgr add cluster $CLUSTER failed; read $SLURM_LOGDIR/slurmdbd.log"
    fi
}

node_state() { sinfo -h -N -n "$H" -o %T 2>/dev/null; }
node_usable() { node_state | grep -Eqx 'idle|mixed|allocated|completing'; }
# slurmctld has registered with slurmdbd: the cluster row has the controller's address.
ctld_registered() {
    [ -n "$(sacctmgr -n -P list cluster "$CLUSTER" format=controlhost 2>/dev/null)" ] &&
        sacct -n -X -S now-1minutes >/dev/null 2>&1
}

# Wait until the node takes jobs. A node left drained or down by an earlier fault (for
# example "Duplicate jobid" after slurmctld was killed while starting a job) is resumed.
wait_node_usable() {
    local deadline=$((SECONDS + HC_TIMEOUT)) state
    until node_usable; do
        state=$(sinfo -h -N -n "$H" -o '%T|%E' 2>/dev/null || true)
        case ${state%%|*} in
        drain* | down* | fail*)
            log "node $H is ${state%%|*} (reason: ${state#*|}); resuming it"
            scontrol update nodename="$H" state=resume >/dev/null 2>&1 || true
            ;;
        esac
        if ! pid_from_file "$SLURMD_PID" slurmd >/dev/null && ! pgrep -x slurmd >/dev/null; then
            die "slurmd exited while waiting for node $H to be idle; read $SLURM_LOGDIR/slurmd.log"
        fi
        if ((SECONDS >= deadline)); then
            die "timed out after ${HC_TIMEOUT}s waiting for node $H to be idle in sinfo" \
                "(state|reason: '$state'); read $SLURM_LOGDIR/slurmd.log and $SLURM_LOGDIR/slurmctld.log"
        fi
        sleep 0.5
    done
}

start_slurm() {
    if ! pid_from_file "$CTLD_PID" slurmctld >/dev/null || ! scontrol ping >/dev/null 2>&1; then
        stop_daemon slurmctld "$CTLD_PID" slurmctld
        log "starting slurmctld (log: $SLURM_LOGDIR/slurmctld.log)"
        /usr/sbin/slurmctld || die "slurmctld failed to start; read $SLURM_LOGDIR/slurmctld.log"
        HC_WATCH_DAEMON="$CTLD_PID slurmctld" wait_until "$HC_TIMEOUT" \
            "slurmctld to answer (scontrol ping)" \
            "$SLURM_LOGDIR/slurmctld.log" scontrol ping
    else
        log "slurmctld already running"
    fi
    if ! pid_from_file "$SLURMD_PID" slurmd >/dev/null; then
        stop_daemon slurmd "$SLURMD_PID" slurmd
        log "starting slurmd (log: $SLURM_LOGDIR/slurmd.log)"
        /usr/sbin/slurmd || die "slurmd failed to start; read $SLURM_LOGDIR/slurmd.log"
    else
        log "slurmd already running"
    fi
    wait_node_usable
    wait_until "$HC_TIMEOUT" "slurmctld to register cluster $CLUSTER with slurmdbd" \
        "$SLURM_LOGDIR/slurmctld.log and $SLURM_LOGDIR/slurmdbd.log" ctld_registered
}

stop_slurm_daemons() {
    if pid_from_file "$CTLD_PID" slurmctld >/dev/null; then
        log "scontrol shutdown"
        scontrol shutdown >/dev/null 2>&1 || true
        local deadline=$((SECONDS + 20))
        while { daemon_pid "$CTLD_PID" slurmctld || daemon_pid "$SLURMD_PID" slurmd; } \
            >/dev/null && ((SECONDS < deadline)); do
            sleep 0.2
        done
    fi
    stop_daemon slurmctld "$CTLD_PID" slurmctld
    stop_daemon slurmd "$SLURMD_PID" slurmd
}

cmd_start() {
    need_root
    ensure_packages "$PKGS" "${BINS[@]}"
    check_hostname "$H"
    configure
    start_munge
    start_mariadb
    start_slurmdbd
    start_slurm
    log "SLURM is up: node $H $(node_state), cluster $CLUSTER, partition debug; start took $(elapsed)s"
}

# Cancel every job, so that none goes on running without the daemons.
cancel_all_jobs() {
    pid_from_file "$CTLD_PID" slurmctld >/dev/null && scontrol ping >/dev/null 2>&1 || return 0
    local ids
    ids=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
    [ -n "${ids// /}" ] || return 0
    log "cancelling jobs: $ids"
    # shellcheck disable=SC2086
    scancel $ids >/dev/null 2>&1 || true
    local deadline=$((SECONDS + 20))
    while [ -n "$(squeue -h -o %A 2>/dev/null)" ] && ((SECONDS < deadline)); do
        sleep 0.2
    done
}

cmd_stop() {
    need_root
    if [ -x /usr/sbin/slurmctld ]; then
        cancel_all_jobs
        stop_slurm_daemons
        # Job steps outlive slurmd by design; a stopped test cluster runs no jobs.
        local pid
        for pid in $(pgrep -x slurmstepd || true); do
            stop_pid slurmstepd "$pid" 5
        done
        stop_daemon slurmdbd "$DBD_PID" slurmdbd
    fi
    if mysql_ok; then
        log "stopping mariadb"
        mysqladmin shutdown >/dev/null 2>&1 || true
    fi
    stop_daemon mysqld_safe /nonexistent mysqld_safe
    stop_daemon mariadbd /run/mysqld/mysqld.pid mariadbd 60
    stop_daemon munged "$MUNGE_PID" munged
    log "SLURM stopped after $(elapsed)s"
}

cmd_status() {
    local rc=0 name
    for name in munged:$MUNGE_PID mariadbd:/run/mysqld/mysqld.pid slurmdbd:$DBD_PID \
        slurmctld:$CTLD_PID slurmd:$SLURMD_PID; do
        local comm=${name%%:*} pidfile=${name#*:} pid
        if pid=$(daemon_pid "$pidfile" "$comm"); then
            echo "$comm: running (pid $pid)"
        else
            echo "$comm: not running"
            rc=3
        fi
    done
    if ((rc == 0)) && node_usable && ctld_registered; then
        echo "node $H: $(node_state); accounting: cluster $CLUSTER registered"
    else
        echo "cluster: not usable"
        rc=3
    fi
    return "$rc"
}

run_command "${1:-}"
