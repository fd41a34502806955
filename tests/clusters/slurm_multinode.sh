#!/usr/bin/env bash
# A three-node SLURM 22.05 cluster on this one machine, for tests of multi-node jobs, MPI,
# node failure, requeue and preemption. It runs beside the one-node cluster of slurm.sh and
# shares nothing with it.
#
#   tests/clusters/slurm_multinode.sh start            install (first time), configure, start, wait
#   tests/clusters/slurm_multinode.sh stop             cancel every job, stop every daemon
#   tests/clusters/slurm_multinode.sh status [--env]   exit 0 only if a 3-node job runs; --env
#                                                      prints the client environment (KEY=VALUE)
#   tests/clusters/slurm_multinode.sh crash-node NAME  SIGKILL every process of node NAME
#   tests/clusters/slurm_multinode.sh start-node NAME  bring node NAME back
#
# Run as root. Cluster "multi", nodes n1 n2 n3 (2 CPUs each), partitions debug (default),
# high and low (preemption by partition priority, requeue, 20 s grace). Everything lives under
# $HPCEXEC_SLURM_MULTI_DIR (default /var/lib/hpcexec-test-slurm-multi): config, state, spool,
# logs, pid files, its own munged (own key and socket). Client commands need its SLURM_CONF
# (written to $DIR/env; without it they talk to the one-node cluster). Each node's slurmd runs
# in its own UTS and mount namespace (hostname nK, $DIR/etc/hosts over /etc/hosts). Daemons run
# under their own command names (mn-munged, mn-slurmctld, mn-slurmd, mn-slurmstepd: symlinks in
# $DIR/bin), and this script finds them by their config paths, never by name alone, so that
# slurm.sh stop (pgrep -x slurmctld ...) and this script's stop leave each other's cluster alone,
# and two directories are two clusters.
set -euo pipefail
HC_NAME=slurm-multinode
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

H=$(hostname -s)
CLUSTER=multi
NODES=(n1 n2 n3)
DIR=${HPCEXEC_SLURM_MULTI_DIR:-/var/lib/hpcexec-test-slurm-multi}
[[ $DIR == /* ]] || die "HPCEXEC_SLURM_MULTI_DIR=$DIR is not an absolute path"
BIN=$DIR/bin
ETC=$DIR/etc
RUN=$DIR/run
LOGS=$DIR/log
CONF=$ETC/slurm.conf
HOSTS=$ETC/hosts
HOSTS_MARK="# hpcexec test cluster $DIR (tests/clusters/slurm_multinode.sh)"
ENV_FILE=$DIR/env
PORTS_FILE=$DIR/ports
CTLD_PID=$RUN/slurmctld.pid
MUNGE_PID=$RUN/munged.pid
MUNGE_SOCKET=$RUN/munge.socket
MUNGE_KEY=$ETC/munge.key
DEFAULT_PORTS=(7817 7821 7822 7823) # slurmctld, then the slurmd of n1, n2, n3
FREE_RANGE=20000-29999                # below Linux's ephemeral ports
# slurm.sh installs slurmctld and slurmd; MPI through PMIx needs OpenMPI and PMIx (libopenmpi-dev
# depends on libpmix-dev and openmpi-bin, libopenmpi3 on libpmix2: mpicc stands for all four).
PKGS="slurm-wlm munge openmpi-bin libopenmpi-dev libpmix2 libpmix-dev"
BINS=(/usr/sbin/slurmctld /usr/sbin/slurmd /usr/sbin/slurmstepd /usr/sbin/munged /usr/bin/munge
    /usr/bin/sbatch /usr/bin/srun /usr/bin/scontrol /usr/bin/mpicc /usr/bin/mpirun
    /usr/bin/unshare /usr/bin/nsenter)
export SLURM_CONF=$CONF

# The cluster's own processes: COMM is the command name, PATTERN a string of its command line.
MUNGE_PATTERN="--socket=$MUNGE_SOCKET "
CTLD_PATTERN="-f $CONF "
slurmd_pattern() { echo "-f $CONF -N $1 "; }

slurm_conf() {
    local ctld_port=$1 i
    cat <<EOF
# Written by tests/clusters/slurm_multinode.sh: a three-node test cluster. Do not edit by hand.
ClusterName=$CLUSTER
SlurmctldHost=$H(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=${PORTS[1]}
AuthType=auth/munge
CredType=cred/munge
# Its own munged; credentials of a requeued job expire after 10 s (it may not start before).
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
# Every daemon and srun listens on 127.0.0.1 only.
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
MpiDefault=pmix
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmdSpoolDir=$DIR/spool/%n
StateSaveLocation=$DIR/state
# pmix needs a temporary directory of each node's own.
TmpFS=$DIR/tmp/%n
SlurmUser=root
SchedulerType=sched/backfill
# Test tuning: no batch scheduling delay; backfill (which starts requeued jobs) every 2 s.
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$LOGS/jobcomp.txt
JobAcctGatherType=jobacct_gather/none
JobRequeue=1
# A node whose slurmd stops answering is down within about 25-30 s.
SlurmdTimeout=10
MinJobAge=300
KillWait=5
# Preemption by partition priority: a job of "high" requeues one of "low" after low's
# GraceTime; with preempt_send_user_signal the victim gets its --signal first.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd-%n.log
SlurmdParameters=config_overrides
EOF
    for i in "${!NODES[@]}"; do
        echo "NodeName=${NODES[i]} NodeHostname=${NODES[i]} NodeAddr=127.0.0.1" \
            "Port=${PORTS[i + 1]} CPUs=2 RealMemory=1000 State=UNKNOWN"
    done
    cat <<EOF
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=OFF
PartitionName=high Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
PartitionName=low Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=20
EOF
}

# /etc/hosts inside each node's namespace. Its first line marks this cluster's nodes.
hosts_file() {
    cat <<EOF
$HOSTS_MARK
127.0.0.1 localhost
127.0.0.1 ${NODES[*]}
127.0.0.1 $H
::1 localhost ip6-localhost ip6-loopback
EOF
}

env_file() {
    cat <<EOF
SLURM_CONF=$CONF
OMPI_MCA_btl_tcp_if_include=lo
OMPI_MCA_oob_tcp_if_include=lo
EOF
}

# our_pid COMM PIDFILE PATTERN: the live process of this cluster named COMM whose command line
# holds PATTERN (its pid file's first, else any such process).
our_pid() {
    local comm=$1 pidfile=$2 pattern=$3 pid
    for pid in $(head -n1 "$pidfile" 2>/dev/null | tr -dc '0-9\n') $(pgrep -x "$comm" || true); do
        if alive "$pid" "$comm" &&
            tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$pattern"; then
            echo "$pid"
            return 0
        fi
    done
    return 1
}

munged_pid() { our_pid mn-munged "$MUNGE_PID" "$MUNGE_PATTERN"; }
ctld_pid() { our_pid mn-slurmctld "$CTLD_PID" "$CTLD_PATTERN"; }
slurmd_pid() { our_pid mn-slurmd "$RUN/slurmd-$1.pid" "$(slurmd_pattern "$1")"; }

# stop_ours NAME FINDER [ARG]: SIGTERM (then SIGKILL) the process FINDER prints until none is left.
stop_ours() {
    local name=$1 pid tries=0
    shift
    while pid=$("$@"); do
        ((++tries <= 5)) || die "cannot stop $name (pid $pid): it survives SIGKILL"
        log "stopping $name (pid $pid)"
        stop_pid "$name" "$pid" 20
    done
}

# node_pids NODE: every live process of NODE: those in a UTS namespace whose host name is NODE
# and whose /etc/hosts is this cluster's (another directory's nodes have the same names).
node_pids() {
    local node=$1 self pid ns seen
    local -A verdict=()
    self=$(readlink /proc/self/ns/uts)
    while read -r pid ns; do
        if [ -z "$ns" ] || [ "$ns" = "$self" ]; then continue; fi
        if [ -z "${verdict[$ns]:-}" ]; then
            seen=$(nsenter -t "$pid" -u -m sh -c 'hostname; head -n1 /etc/hosts' 2>/dev/null) || continue
            if [ "$seen" = "$node"$'\n'"$HOSTS_MARK" ]; then verdict[$ns]=1; else verdict[$ns]=0; fi
        fi
        if [ "${verdict[$ns]}" = 1 ] && ! grep -q '^State:[[:space:]]*[ZX]' "/proc/$pid/status" 2>/dev/null; then
            echo "$pid"
        fi
    done < <(find /proc -mindepth 3 -maxdepth 3 -path '/proc/[0-9]*/ns/uts' -printf '%h %l\n' 2>/dev/null |
        sed 's|^/proc/\([0-9]*\)/ns |\1 |')
}

# kill_node NODE SIGNAL: send SIGNAL to every process of NODE until none is left.
kill_node() {
    local node=$1 sig=$2 pids tries=0
    while pids=$(node_pids "$node") && [ -n "$pids" ]; do
        ((++tries <= 50)) || die "processes of node $node survive SIG$sig: $(echo "$pids" | xargs)"
        # shellcheck disable=SC2086
        kill "-$sig" $pids 2>/dev/null || true
        sleep 0.2
    done
}

# Ports: the variable, else those of the last start (or the defaults) where free or ours,
# else free ones picked here. A port another program holds never stops a start.
listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
in_use() { ss -Htan "sport = :$1" 2>/dev/null | grep -q .; }

# A program other than this cluster's slurmctld and slurmds listens on PORT.
port_taken() {
    local port=$1 pid ours=" " node
    listening "$port" || return 1
    ours+="$(ctld_pid || true) "
    for node in "${NODES[@]}"; do ours+="$(slurmd_pid "$node" || true) "; done
    for pid in $(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
        [[ $ours == *" $pid "* ]] && return 1
    done
    return 0
}

saved_ports() {
    local p=()
    [ -s "$PORTS_FILE" ] && read -r -a p <"$PORTS_FILE"
    if ((${#p[@]} == 4)) && [[ "${p[*]}" =~ ^[0-9]+( [0-9]+){3}$ ]]; then
        echo "${p[*]}"
    else
        echo "${DEFAULT_PORTS[*]}"
    fi
}

# Set PORTS (slurmctld, n1, n2, n3).
choose_ports() {
    local saved i p holder
    if [ -n "${HPCEXEC_SLURM_MULTI_PORTS:-}" ]; then
        read -r -a PORTS <<<"$HPCEXEC_SLURM_MULTI_PORTS"
        if ! [[ "${PORTS[*]}" =~ ^[0-9]+( [0-9]+){3}$ ]] ||
            (($(printf '%s\n' "${PORTS[@]}" | sort -u | wc -l) != 4)); then
            die "HPCEXEC_SLURM_MULTI_PORTS='$HPCEXEC_SLURM_MULTI_PORTS' must be four different ports: slurmctld, n1, n2, n3"
        fi
        for p in "${PORTS[@]}"; do
            if port_taken "$p"; then
                holder=$(ss -Hltnp "sport = :$p" | head -n1)
                die "port $p (from HPCEXEC_SLURM_MULTI_PORTS) is taken by another program: $holder; choose another, or unset it to let $0 pick"
            fi
        done
        return
    fi
    read -r -a saved < <(saved_ports)
    PORTS=()
    for i in 0 1 2 3; do
        for p in "${saved[i]}" "${DEFAULT_PORTS[i]}" $(shuf -i "$FREE_RANGE" -n 200); do
            [[ " ${PORTS[*]} " != *" $p "* ]] || continue
            if [ "$p" = "${saved[i]}" ] || [ "$p" = "${DEFAULT_PORTS[i]}" ]; then
                port_taken "$p" || break
            elif ! in_use "$p"; then
                log "port $(printf '%s\n' "${saved[i]}" "${DEFAULT_PORTS[i]}" | sort -u | xargs | sed 's/ / and /')" \
                    "taken: using $p (HPCEXEC_SLURM_MULTI_PORTS chooses)"
                break
            fi
            p=
        done
        [ -n "$p" ] || die "no free port found in $FREE_RANGE; set HPCEXEC_SLURM_MULTI_PORTS"
        PORTS+=("$p")
    done
}

# Write the config files; restart the daemons that read one that changed.
configure() {
    mkdir -p "$BIN" "$ETC" "$RUN" "$LOGS" "$DIR/state"
    chmod 755 "$DIR" "$BIN" "$ETC" "$RUN" "$LOGS"
    local node d
    for node in "${NODES[@]}"; do mkdir -p "$DIR/spool/$node" "$DIR/tmp/$node"; done
    for d in munged:/usr/sbin/munged slurmctld:/usr/sbin/slurmctld slurmd:/usr/sbin/slurmd \
        slurmstepd:/usr/sbin/slurmstepd; do
        [ "$(readlink "$BIN/mn-${d%%:*}")" = "${d#*:}" ] || ln -sfn "${d#*:}" "$BIN/mn-${d%%:*}"
    done
    if [ ! -s "$MUNGE_KEY" ]; then
        log "creating $MUNGE_KEY"
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
    fi
    chmod 400 "$MUNGE_KEY"
    local restart_all=0 restart_nodes=0
    if write_if_changed "$CONF" 644 < <(slurm_conf "${PORTS[0]}"); then
        log "wrote $CONF"
        restart_all=1
    fi
    if write_if_changed "$HOSTS" 644 < <(hosts_file); then
        log "wrote $HOSTS"
        restart_nodes=1
    fi
    echo "${PORTS[*]}" | write_if_changed "$PORTS_FILE" 644 || true
    env_file | write_if_changed "$ENV_FILE" 644 || true
    if ((restart_all)); then
        stop_slurm_daemons
    elif ((restart_nodes)); then
        for node in "${NODES[@]}"; do stop_ours "slurmd of $node" slurmd_pid "$node"; done
    fi
}

munge_ok() { munge -S "$MUNGE_SOCKET" -n </dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; }
ctld_ok() { scontrol ping 2>/dev/null | grep -q 'is UP'; }

start_munge() {
    if munged_pid >/dev/null && munge_ok; then
        log "munged already running"
        return
    fi
    stop_ours munged munged_pid
    log "starting munged (log: $LOGS/munged.log)"
    # --force: start even if a killed munged left its socket behind.
    "$BIN/mn-munged" --socket="$MUNGE_SOCKET" --key-file="$MUNGE_KEY" --pid-file="$MUNGE_PID" \
        --log-file="$LOGS/munged.log" --seed-file="$RUN/munged.seed" --force ||
        die "munged failed to start; read $LOGS/munged.log"
    wait_until "$HC_TIMEOUT" "munged to answer (munge -n | unmunge)" "$LOGS/munged.log" munge_ok
}

start_ctld() {
    if ctld_pid >/dev/null && ctld_ok; then
        log "slurmctld already running"
        return
    fi
    stop_ours slurmctld ctld_pid
    log "starting slurmctld on 127.0.0.1:${PORTS[0]} (log: $LOGS/slurmctld.log)"
    "$BIN/mn-slurmctld" -f "$CONF" || die "slurmctld failed to start; read $LOGS/slurmctld.log"
    wait_until "$HC_TIMEOUT" "slurmctld to answer (scontrol ping)" "$LOGS/slurmctld.log" ctld_ok
}

# start_slurmd NODE: its slurmd in a new UTS and mount namespace, as host NODE.
start_slurmd() {
    local node=$1 i port log=$LOGS/slurmd-$1.log
    if slurmd_pid "$node" >/dev/null; then
        log "slurmd of $node already running"
        return
    fi
    for i in "${!NODES[@]}"; do [ "${NODES[i]}" = "$node" ] && port=${PORTS[i + 1]}; done
    log "starting slurmd of $node on 127.0.0.1:$port (log: $log)"
    rm -f "$RUN/slurmd-$node.pid"
    # shellcheck disable=SC2016 # expanded by the inner shell
    unshare --uts --mount --propagation private /bin/sh -c \
        'hostname "$1" && mount --bind "$2" /etc/hosts && exec "$3" -f "$4" -N "$1" -d "$5"' \
        mn-node "$node" "$HOSTS" "$BIN/mn-slurmd" "$CONF" "$BIN/mn-slurmstepd" ||
        die "slurmd of $node failed to start; read $log"
    wait_until "$HC_TIMEOUT" "slurmd of $node to run" "$log" slurmd_pid "$node"
}

node_state() { sinfo -h -N -n "$1" -o %T 2>/dev/null | head -n1; }
node_states() { sinfo -h -N -o '%N=%T' 2>/dev/null | sort -u | xargs; }
node_usable() { node_state "$1" | grep -Eqx 'idle|mixed|allocated|completing'; }

# wait_nodes_usable NODE...: until each takes jobs; a node left drained or down is resumed.
wait_nodes_usable() {
    local deadline=$((SECONDS + HC_TIMEOUT)) node state pending
    while :; do
        pending=
        for node in "$@"; do
            node_usable "$node" && continue
            pending+=" $node"
            slurmd_pid "$node" >/dev/null ||
                die "slurmd of $node exited while waiting for it to be idle; read $LOGS/slurmd-$node.log"
            state=$(sinfo -h -N -n "$node" -o '%T|%E' 2>/dev/null | head -n1 || true)
            case ${state%%|*} in
            drain* | down* | fail*)
                log "node $node is ${state%%|*} (reason: ${state#*|}); resuming it"
                scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
                ;;
            esac
        done
        [ -n "$pending" ] || return 0
        if ((SECONDS >= deadline)); then
            die "timed out after ${HC_TIMEOUT}s waiting for node(s)$pending to be idle" \
                "($(node_states)); read $LOGS/slurmd-<node>.log and $LOGS/slurmctld.log"
        fi
        sleep 0.5
    done
}

stop_slurm_daemons() {
    local node deadline
    if ctld_pid >/dev/null; then
        log "scontrol shutdown"
        scontrol shutdown >/dev/null 2>&1 || true
        deadline=$((SECONDS + 20))
        while ((SECONDS < deadline)) && { ctld_pid || for node in "${NODES[@]}"; do
            slurmd_pid "$node" && break
        done; } >/dev/null; do
            sleep 0.2
        done
    fi
    stop_ours slurmctld ctld_pid
    for node in "${NODES[@]}"; do stop_ours "slurmd of $node" slurmd_pid "$node"; done
}

# Cancel every job, so that none goes on running without the daemons.
cancel_all_jobs() {
    ctld_pid >/dev/null && ctld_ok || return 0
    local ids deadline
    ids=$(squeue -h -o %A 2>/dev/null | sort -u | xargs)
    [ -n "$ids" ] || return 0
    log "cancelling jobs: $ids"
    # shellcheck disable=SC2086
    scancel $ids >/dev/null 2>&1 || true
    deadline=$((SECONDS + 20))
    while [ -n "$(squeue -h -o %A 2>/dev/null)" ] && ((SECONDS < deadline)); do
        sleep 0.2
    done
}

check_node_name() {
    [[ " ${NODES[*]} " == *" ${1:-} "* ]] || die "no node '${1:-}': the nodes are ${NODES[*]}"
}

cmd_start() {
    need_root
    ensure_packages "$PKGS" "${BINS[@]}"
    check_hostname "$H"
    choose_ports
    configure
    start_munge
    start_ctld
    local node
    for node in "${NODES[@]}"; do start_slurmd "$node"; done
    wait_nodes_usable "${NODES[@]}"
    log "cluster $CLUSTER is up: $(node_states), slurmctld 127.0.0.1:${PORTS[0]}," \
        "slurmd ${PORTS[*]:1}; start took $(elapsed)s"
    log "clients: export \$(cat $ENV_FILE)   (SLURM_CONF=$CONF)"
}

cmd_stop() {
    need_root
    local node
    cancel_all_jobs
    stop_slurm_daemons
    # Job steps outlive slurmd by design; a stopped test cluster runs no jobs.
    for node in "${NODES[@]}"; do kill_node "$node" KILL; done
    stop_ours munged munged_pid
    log "cluster $CLUSTER stopped after $(elapsed)s"
}

cmd_crash_node() {
    need_root
    check_node_name "$1"
    local pids
    pids=$(node_pids "$1" | xargs)
    log "SIGKILL to every process of node $1: ${pids:-none running}"
    kill_node "$1" KILL
    log "node $1 crashed after $(elapsed)s; slurmctld marks it down after about 25-30 s"
}

cmd_start_node() {
    need_root
    check_node_name "$1"
    if ! { ctld_pid >/dev/null && ctld_ok && munged_pid >/dev/null; }; then
        die "the cluster is not running: start it with $0 start"
    fi
    read -r -a PORTS < <(saved_ports)
    start_slurmd "$1"
    wait_nodes_usable "$1"
    log "node $1 is $(node_state "$1") after $(elapsed)s"
}

# Exit 0 only if every daemon runs and a job of one task on each node prints n1 n2 n3.
# With --env, print only the client environment (KEY=VALUE lines) on stdout.
cmd_status() {
    local rc=0 out=1 pid node got
    [ "${1:-}" = --env ] && out=2
    {
        for node in munged slurmctld; do
            if pid=$("${node#slurm}_pid"); then echo "$node: running (pid $pid)"; else
                echo "$node: not running"
                rc=3
            fi
        done
        for node in "${NODES[@]}"; do
            if pid=$(slurmd_pid "$node"); then
                echo "slurmd $node: running (pid $pid), $(node_state "$node" || true)"
            else
                echo "slurmd $node: not running"
                rc=3
            fi
        done
        if ((rc == 0)); then
            got=$(timeout 60 srun -N3 -n3 -t 1 -J mn-status --immediate=30 hostname 2>&1 | sort | xargs) || true
            if [ "$got" = "${NODES[*]}" ]; then
                echo "a 3-node job ran on: $got"
            else
                echo "cluster: not usable (srun -N3 hostname printed: $got)"
                rc=3
            fi
        fi
        echo "ports (slurmctld n1 n2 n3): $(saved_ports); client environment: $ENV_FILE"
    } >&"$out"
    ((rc == 0)) && [ "$out" = 2 ] && cat "$ENV_FILE"
    return "$rc"
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status "${2:-}" ;;
crash-node) cmd_crash_node "${2:-}" ;;
start-node) cmd_start_node "${2:-}" ;;
*)
    echo "usage: $0 start|stop|status [--env]|crash-node NODE|start-node NODE" >&2
    exit 2
    ;;
esac
