#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for the integration tests and for trying the slurm
# profile by hand:
#   bash tests/integration/slurm_cluster.sh up      # munge, mariadb, slurmdbd, slurmctld, slurmd
#   sinfo; sbatch ...; sacct                       # the config is linked to /etc/slurm/slurm.conf
#   bash tests/integration/slurm_cluster.sh down    # cancel every job, stop every daemon
# Configs, spool, logs and the accounting database live in one state directory, $DREAMFLOW_SLURM_DIR
# (default /tmp/dreamflow-slurm); `up` starts from an empty one, `down` keeps it for the logs.
# The daemons run directly (no systemd), as root, on ports of their own; /etc/slurm/slurm.conf is a
# link to this cluster's config while it is up, so `up` refuses to run where a real SLURM is set up.
# Needs the packages of tests/integration/setup-slurm.sh.
set -Eeuo pipefail

STATE=$(realpath -m "${DREAMFLOW_SLURM_DIR:-/tmp/dreamflow-slurm}")
export SLURM_CONF=$STATE/etc/slurm.conf
CLUSTER=dreamflow
PARTITION=debug
ACCOUNT=dreamflow-test
CTLD_PORT=16817
SLURMD_PORT=16818
DBD_PORT=16819
DB_PORT=13306
NODE=$(hostname -s)
# the node's GPUs: one per CPU, so that two one-CPU dream jobs still run side by side
GPUS=2
MUNGE_SOCKET=$STATE/run/munge.socket
# srun inside a job reads only this default path: Snakemake's SLURM job step drops SLURM_CONF
DEFAULT_CONF=/etc/slurm/slurm.conf
DB_SOCKET=$STATE/run/mysqld.sock

# wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds, or fail naming what hung
wait_for() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "slurm_cluster: $what not ready after ${seconds}s; logs in $STATE/log" >&2
            return 1
        fi
        sleep 0.5
    done
}

write_configs() {
    mkdir -p "$STATE"/{etc,run,log,munge,ctld,slurmd,db}
    chmod 700 "$STATE/munge"
    # the node as slurmd itself sees it (CPUs, sockets, RealMemory), reachable on the loopback
    local node_line
    node_line=$(slurmd -C | head -n 1)
    cat >"$STATE/etc/slurm.conf" <<EOF
# written by tests/integration/slurm_cluster.sh: one node, $NODE, for the dreamflow integration tests
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# process tracking and CPU binding without cgroups (this VM mounts a v1/v2 hybrid of them)
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1024
# GPUs that are stand-ins (gres.conf): this machine has none, yet a GPU request is scheduled,
# allocated and recorded (sacct's ReqTRES and AllocTRES) as on a GPU node
GresTypes=gpu
AccountingStorageTRES=gres/gpu
# slurmctld keeps a finished job for an hour: scontrol still shows how it asked for its GPU
MinJobAge=3600
SchedulerType=sched/backfill
ReturnToService=2
MailProg=/bin/true
MpiDefault=none
# accounting through slurmdbd: Snakemake's SLURM executor reads job states with sacct
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$MUNGE_SOCKET
AccountingStorageEnforce=associations
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
# keep sbatch --comment in the database: the executor writes the rule or group of each job there
AccountingStoreFlags=job_comment
$node_line Gres=gpu:$GPUS NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    # SLURM 22.05 drops a GPU without File= ("Removing file-less GPU") and wants a character
    # device there: each stand-in is a node of /dev/null's device (1:3). Nothing opens them, as no
    # cgroup plugin constrains devices here; the jobs' CUDA_VISIBLE_DEVICES name their indices.
    mkdir -p "$STATE/gpu"
    local gpu
    for ((gpu = 0; gpu < GPUS; gpu++)); do
        mknod "$STATE/gpu/nvidia$gpu" c 1 3
    done
    cat >"$STATE/etc/gres.conf" <<EOF
NodeName=$NODE Name=gpu File=$STATE/gpu/nvidia[0-$((GPUS - 1))]
EOF
    cat >"$STATE/etc/slurmdbd.conf" <<EOF
# written by tests/integration/slurm_cluster.sh
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=dreamflow-test
StorageLoc=slurm_acct_db
EOF
    # slurmdbd refuses a config (it holds the database password) that others can read
    chmod 600 "$STATE/etc/slurmdbd.conf"
}

link_default_config() {
    if [ -e "$DEFAULT_CONF" ] && [ "$(readlink "$DEFAULT_CONF")" != "$SLURM_CONF" ]; then
        echo "slurm_cluster: $DEFAULT_CONF belongs to another SLURM; not replacing it" >&2
        return 1
    fi
    mkdir -p "$(dirname "$DEFAULT_CONF")"
    # a link left by a test cluster whose state directory is gone is replaced too
    ln -sfn "$SLURM_CONF" "$DEFAULT_CONF"
}

start_munge() {
    mungekey --create --keyfile="$STATE/munge/munge.key"
    # --force: munged wants a socket everyone can reach, and the state directory may sit in a private
    # one (pytest's temporary directories are 0700); only root talks to this munged
    munged --force --socket="$MUNGE_SOCKET" --key-file="$STATE/munge/munge.key" \
        --pid-file="$STATE/run/munged.pid" --log-file="$STATE/log/munged.log" \
        --seed-file="$STATE/munge/munged.seed"
    wait_for 10 munged munge --socket="$MUNGE_SOCKET" --string=ping
}

start_mariadb() {
    mariadb-install-db --no-defaults --datadir="$STATE/db" --user=root --skip-test-db \
        --auth-root-authentication-method=normal --innodb-log-file-size=8M \
        >"$STATE/log/mariadb-install.log" 2>&1
    setsid mariadbd --no-defaults --datadir="$STATE/db" --user=root --socket="$DB_SOCKET" \
        --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve --innodb-log-file-size=8M \
        --pid-file="$STATE/run/mariadb.pid" --log-error="$STATE/log/mariadb.log" \
        </dev/null >/dev/null 2>&1 &
    wait_for 60 mariadb mariadb-admin --no-defaults --socket="$DB_SOCKET" ping
    mariadb --no-defaults --socket="$DB_SOCKET" --user=root <<EOF
CREATE DATABASE slurm_acct_db;
CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'dreamflow-test';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
}

start_slurm() {
    # slurmdbd reads slurmdbd.conf beside $SLURM_CONF
    slurmdbd
    wait_for 60 slurmdbd sacctmgr --noheader list cluster
    sacctmgr --immediate add cluster "$CLUSTER" >/dev/null
    sacctmgr --immediate add account "$ACCOUNT" cluster="$CLUSTER" description="dreamflow tests" >/dev/null
    sacctmgr --immediate add user "$(id -un)" account="$ACCOUNT" cluster="$CLUSTER" >/dev/null
    slurmctld -f "$SLURM_CONF"
    slurmd -f "$SLURM_CONF"
    wait_for 60 "the node $NODE (idle in sinfo)" node_idle
}

node_idle() {
    [ "$(sinfo --noheader --nodes="$NODE" --format=%t)" = idle ]
}

# stop_daemon NAME: TERM the daemon of NAME's pid file, then KILL it if it lingers
stop_daemon() {
    local pidfile=$STATE/run/$1.pid pid
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -TERM "$pid" 2>/dev/null; then
        wait_for 30 "$1 to stop" bash -c "! kill -0 $pid" || kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

no_jobs() {
    [ -z "$(squeue --noheader --format=%A)" ]
}

up() {
    down
    rm -rf "$STATE"
    # a daemon that does not come up takes the ones started before it down with it
    trap 'echo "slurm_cluster: up failed, stopping what it started" >&2; down' ERR
    write_configs
    link_default_config
    start_munge
    start_mariadb
    start_slurm
    echo "SLURM cluster $CLUSTER is up: partition $PARTITION, account $ACCOUNT, node $NODE"
    echo "config: $DEFAULT_CONF -> $SLURM_CONF, logs: $STATE/log"
}

down() {
    [ -d "$STATE/run" ] || return 0
    if [ -s "$STATE/run/slurmctld.pid" ] && kill -0 "$(cat "$STATE/run/slurmctld.pid")" 2>/dev/null; then
        squeue --noheader --format=%A | xargs --no-run-if-empty scancel
        wait_for 60 "cancelled jobs to end" no_jobs || true
    fi
    for daemon in slurmd slurmctld slurmdbd mariadb munged; do
        stop_daemon "$daemon"
    done
    if [ "$(readlink "$DEFAULT_CONF")" = "$SLURM_CONF" ]; then
        rm -f "$DEFAULT_CONF"
    fi
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down   (state in \$DREAMFLOW_SLURM_DIR, default /tmp/dreamflow-slurm)" >&2; exit 2 ;;
esac
