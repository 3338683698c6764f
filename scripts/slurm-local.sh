#!/usr/bin/env bash
# A single-node Slurm on this machine with one fake GPU, to run the workflow with --profile
# profiles/slurm without a cluster (the Slurm test uses it).
#
#   scripts/slurm-local.sh start    install (apt-get, root) if missing; start munged, slurmctld, slurmd
#   scripts/slurm-local.sh status   the node as sinfo sees it
#   scripts/slurm-local.sh stop     stop the daemons this script started, by their PID files
#
# Everything lives in $SLURM_LOCAL_DIR (default /tmp/lowloss-slurm): slurm.conf, gres.conf, state,
# spool, logs and PID files. /etc/slurm/slurm.conf and gres.conf become links to them while it runs:
# snakemake's job step clears SLURM_* variables (SLURM_CONF included), so `srun` inside a job only
# finds the default location. An existing Slurm configuration there is never touched: start refuses.
# No accounting daemon: use snakemake's `--slurm-status-command squeue` (jobs stay visible to squeue
# for MinJobAge=600 s). No cgroups here, hence linuxproc/none plugins. The GPU is a generic resource
# backed by /dev/null: jobs can request it and are scheduled on it, nothing more.
set -euo pipefail

DIR="${SLURM_LOCAL_DIR:-/tmp/lowloss-slurm}"
CONF="$DIR/slurm.conf"
SYSTEM_CONF=/etc/slurm
HOST="$(hostname -s)"
PARTITION=main

log() { echo "slurm-local: $*" >&2; }
die() { log "error: $*"; exit 1; }

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sbatch >/dev/null && return 0
    [ "$(id -u)" = 0 ] || die "Slurm is not installed and installing it needs root (apt-get)"
    command -v apt-get >/dev/null || die "Slurm is not installed and apt-get is not available"
    log "installing slurmctld slurmd slurm-client munge with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
}

write_config() {
    mkdir -p "$DIR/state" "$DIR/spool"
    getent hosts "$HOST" >/dev/null || echo "127.0.0.1 $HOST" >> /etc/hosts
    # The node as slurmd detects it, with RealMemory lowered 10 % (a node claiming more than it has drains).
    local node memory
    node="$(slurmd -C | head -n 1)"
    memory="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")"
    node="$(sed "s/RealMemory=[0-9]*/RealMemory=$((memory * 9 / 10))/" <<<"$node")"
    cat > "$CONF" <<EOF
ClusterName=lowloss-local
SlurmctldHost=$HOST
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
MinJobAge=600
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
GresTypes=gpu
$node Gres=gpu:1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
    # A GPU line without File= is dropped by slurmd and the node goes INVAL.
    echo "Name=gpu File=/dev/null" > "$DIR/gres.conf"
    mkdir -p "$SYSTEM_CONF"
    for file in slurm.conf gres.conf; do
        if [ -e "$SYSTEM_CONF/$file" ] && [ "$(readlink "$SYSTEM_CONF/$file")" != "$DIR/$file" ]; then
            die "$SYSTEM_CONF/$file exists and is not ours: this machine has its own Slurm; not touching it"
        fi
        ln -sfn "$DIR/$file" "$SYSTEM_CONF/$file"
    done
}

unlink_config() {
    for file in slurm.conf gres.conf; do
        [ "$(readlink "$SYSTEM_CONF/$file" 2>/dev/null)" = "$DIR/$file" ] && rm -f "$SYSTEM_CONF/$file"
    done
    return 0
}

running() {  # running PIDFILE: the process of that PID file is alive
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

start_munge() {
    if running /run/munge/munged.pid; then
        log "munged already running (not started here, left alone)"
        return 0
    fi
    mkdir -p /run/munge
    chown munge:munge /run/munge
    [ -s /etc/munge/munge.key ] || die "/etc/munge/munge.key is missing (reinstall munge)"
    runuser -u munge -- munged --pid-file=/run/munge/munged.pid
    cp /run/munge/munged.pid "$DIR/munged.pid"  # ours to stop
}

wait_idle() {
    local state=""
    for _ in $(seq 60); do
        state="$(sinfo -h -n "$HOST" -o %T 2>/dev/null || true)"
        [ "$state" = idle ] && return 0
        sleep 1
    done
    log "node state: '${state:-unknown}' after 60 s; slurmd log:"
    tail -n 20 "$DIR/slurmd.log" >&2 || true
    die "the node did not become idle"
}

start() {
    install_packages
    if running "$DIR/slurmctld.pid" && running "$DIR/slurmd.pid"; then
        log "already running"
        return 0
    fi
    write_config
    start_munge
    slurmctld -c -f "$CONF"
    slurmd -f "$CONF"
    wait_idle
    log "running: partition $PARTITION, node $HOST with one GPU (config and logs in $DIR)"
}

stop_pidfile() {  # stop_pidfile NAME: SIGTERM the PID in $DIR/NAME.pid, wait for it to exit
    local file="$DIR/$1.pid" pid
    running "$file" || { rm -f "$file"; return 0; }
    pid="$(cat "$file")"
    kill "$pid"
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$file"; log "stopped $1 ($pid)"; return 0; }
        sleep 0.1
    done
    log "$1 ($pid) ignored SIGTERM for 10 s; sending SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$file"
}

stop() {
    stop_pidfile slurmd
    stop_pidfile slurmctld
    stop_pidfile munged
    unlink_config
}

status() {
    sinfo -N -o "%N %P %T %c %m %G"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
