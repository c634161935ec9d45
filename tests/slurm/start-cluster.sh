#!/usr/bin/env bash
# Bring up a multi-node SLURM cluster (accounting, 2 fake GPUs per node, preemption) on this one machine for
# shardprep's tests: NODES compute nodes n1..nN, one slurmd each (Slurm's multiple-slurmd mode: each slurmd has its
# own node name, port, spool folder and log, all on this host's filesystem, which is the cluster's shared one).
# Partitions: main (default; never preempted), low (preemptible: requeued), high (preempts low).
# Idempotent: exits at once when the cluster already answers; starts what is missing (a killed node's slurmd, daemons
# gone after a reboot) and resumes nodes left down. Prints one line "slurm cluster up: ..." on success; a one-line
# reason on stderr on failure.
#
# SHARDPREP_SLURM_INSTANCE=<name> brings up a second, separate cluster beside the suite's (config in
# /etc/slurm-<name>, other ports, spool/pid/log names with <name>; clients use SLURM_CONF=/etc/slurm-<name>/slurm.conf):
# a changed config can be tried out without restarting the cluster in use. It shares munge, MariaDB and slurmdbd.
set -Eeuo pipefail

INSTANCE=${SHARDPREP_SLURM_INSTANCE:-}
NODES=${SHARDPREP_SLURM_NODES:-3}
PARTITION=main
HOST=$(hostname -s)
LOG=/var/log/slurm
if [[ -n $INSTANCE ]]; then
    if [[ ! $INSTANCE =~ ^[a-z0-9]+$ ]]; then
        echo "start-cluster: SHARDPREP_SLURM_INSTANCE=$INSTANCE: use lower-case letters and digits" >&2
        exit 2
    fi
    CLUSTER=shardprep$INSTANCE
    CONF=/etc/slurm-$INSTANCE
    TAG=-$INSTANCE
    PORT=${SHARDPREP_SLURM_PORT:-7817}
else
    CLUSTER=shardprep
    CONF=/etc/slurm
    TAG=
    PORT=6817
fi
export SLURM_CONF=$CONF/slurm.conf
# Bump when the generated slurm.conf changes: a running cluster of another layout is reconfigured, not kept.
LAYOUT="# layout 4: $NODES nodes, partitions main low high"
NODE_LIST="n[1-$NODES]"
CTLD_PID=/run/slurmctld$TAG.pid
# slurmd_pid NODE : the pid file of that node's slurmd (SlurmdPidFile with %n)
slurmd_pid() { echo "/run/slurmd$TAG-$1.pid"; }
GPU_DIR=/var/spool/slurm-fake-gpu
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=slurm-test-only   # local test cluster, DB reachable only through localhost
# faketime: the tests set a node's clock off (clock skew of freshness checks).
PKGS=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server faketime)

die() { echo "start-cluster: $*" >&2; exit 1; }
trap 'die "failed (line $LINENO): $BASH_COMMAND"' ERR

# wait_for SECONDS WHAT CMD... : poll CMD once a second, give up after SECONDS.
wait_for() {
    local limit=$1 what=$2; shift 2
    local deadline=$((SECONDS + limit))
    until timeout 10 "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out after ${limit}s waiting for $what"
        sleep 1
    done
}

# pid_alive PIDFILE NAME : the daemon of that pid file runs (a stale file from before a reboot does not count).
pid_alive() { [[ -s $1 && $(cat "/proc/$(cat "$1")/comm" 2>/dev/null) == "$2" ]]; }

# node_states : "<node> <state>" per node
node_states() { timeout 5 sinfo -h -N -p "$PARTITION" -o '%N %T' 2>/dev/null; }

# Every node usable: responding (no "*" suffix) and not down/drained; busy states count as up.
nodes_up() {
    local states
    states=$(node_states) || return 1
    (($(wc -l <<<"$states") == NODES)) && ! grep -qvE ' (idle|mixed|allocated|completing)$' <<<"$states"
}

sacct_ok() { timeout 10 sacct -n -X -S now-1minutes >/dev/null 2>&1; }

summary() { sinfo -h -o '%P %a nodes=%D(%N) %T cpus=%c mem=%mMB gres=%G' | paste -sd ';' | sed 's/;/; /g'; }

# --- fast path: already running --------------------------------------------------------------
if command -v sinfo >/dev/null && grep -qxF "$LAYOUT" "$SLURM_CONF" 2>/dev/null && nodes_up && sacct_ok; then
    echo "slurm cluster up: $(summary)"
    exit 0
fi

mkdir -p "$LOG"

# --- packages ---------------------------------------------------------------------------------
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    # Keep the packages' maintainer scripts from starting daemons; we start them with our config.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    timeout 300 apt-get update -q >"$LOG/apt.log" 2>&1 || die "apt-get update failed, see $LOG/apt.log"
    timeout 900 apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$LOG/apt.log" 2>&1 \
        || die "apt-get install ${missing[*]} failed, see $LOG/apt.log"
fi

# root-owned: munged refuses a log file in a directory owned by another user. After the packages: the slurm
# packages' maintainer scripts chown this folder to slurm on install.
install -d -o root -g root -m 755 "$LOG"

# --- munge ------------------------------------------------------------------------------------
if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 755 /run/munge   # /run is emptied by a reboot
install -d -o munge -g munge -m 700 /var/lib/munge
touch "$LOG/munged.log" && chown munge:munge "$LOG/munged.log" && chmod 640 "$LOG/munged.log"
if ! pid_alive /run/munge/munged.pid munged; then
    runuser -u munge -- munged --log-file="$LOG/munged.log" </dev/null >/dev/null 2>&1 \
        || die "munged did not start, see $LOG/munged.log"
fi
wait_for 20 "munge" bash -c 'munge -n | unmunge'

# --- MariaDB for slurmdbd ---------------------------------------------------------------------
install -d -o mysql -g mysql -m 755 /run/mysqld
touch "$LOG/mysqld.log" && chown mysql:mysql "$LOG/mysqld.log"
if [[ ! -d /var/lib/mysql/mysql ]]; then
    timeout 120 mariadb-install-db --user=mysql --datadir=/var/lib/mysql >>"$LOG/mysqld.log" 2>&1
fi
if ! timeout 5 mysqladmin --silent ping >/dev/null 2>&1; then
    # setsid + closed fds: mysqld_safe must not hold the caller's terminal or pipes.
    setsid mysqld_safe --log-error="$LOG/mysqld.log" </dev/null >/dev/null 2>&1 &
    wait_for 60 "mariadb (see $LOG/mysqld.log)" mysqladmin --silent ping
fi
timeout 20 mysql -u root <<SQL
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
SQL

# --- config files -----------------------------------------------------------------------------
mkdir -p "$CONF" "/var/spool/slurmctld$TAG" "/var/spool/slurmd$TAG" "$GPU_DIR"

# write_if_changed FILE MODE : content from stdin; returns 0 if the file changed.
write_if_changed() {
    local tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if [[ -f $1 ]] && cmp -s "$tmp" "$1"; then rm -f "$tmp"; return 1; fi
    install -m "$2" "$tmp" "$1"
    rm -f "$tmp"
}

# One slurmdbd for every instance: its config is the suite's, in /etc/slurm.
mkdir -p /etc/slurm
write_if_changed /etc/slurm/slurmdbd.conf 600 <<EOC || true
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOC

# Fake GPUs: slurmd only accepts character devices; these are /dev/null twins (c 1 3).
for i in 0 1; do
    [[ -c $GPU_DIR/gpu$i ]] || { rm -f "$GPU_DIR/gpu$i"; mknod "$GPU_DIR/gpu$i" c 1 3; }
done

CPUS=$(nproc)
MEM_MIB=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
REAL_MEM=$((MEM_MIB * 9 / 10))             # margin: slurmd drains a node that has less than declared
DEF_MEM=$((REAL_MEM / (CPUS * 4)))         # jobs without --mem must not take the whole node (FORCE:4)

conf_changed=0
write_if_changed "$CONF/gres.conf" 644 <<EOC && conf_changed=1
AutoDetect=off
NodeName=$NODE_LIST Name=gpu File=$GPU_DIR/gpu[0-1]
EOC

write_if_changed "$CONF/slurm.conf" 644 <<EOC && conf_changed=1
# Generated by tests/slurm/start-cluster.sh -- $NODES-node test cluster on one host (multiple-slurmd mode).
$LAYOUT
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmctldPort=$PORT
SlurmUser=root
AuthType=auth/munge
# A requeued job may only start again after the job credential expired (default 120 s).
AuthInfo=cred_expire=10
MailProg=/bin/true
MpiDefault=none
# No cgroups in the sandbox.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEF_MEM
StateSaveLocation=/var/spool/slurmctld$TAG
SlurmdSpoolDir=/var/spool/slurmd$TAG/%n
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=/run/slurmd$TAG-%n.pid
SlurmctldLogFile=$LOG/slurmctld$TAG.log
SlurmdLogFile=$LOG/slurmd$TAG-%n.log
# A node that comes back (its slurmd restarted, a reboot) is usable again without an admin.
ReturnToService=2
# A node whose slurmd stops answering is DOWN after this long (default 300 s); its jobs are requeued (JobRequeue).
# Not shorter: a slurmd on a loaded 2-core machine must never miss it (the fault tests mark a killed node DOWN).
SlurmdTimeout=120
MaxArraySize=1001
# Short timers for tests.
KillWait=5
MinJobAge=300
InactiveLimit=0
OverTimeLimit=0
JobRequeue=1
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
# Preemption by partition: a job of a higher PriorityTier requeues the jobs of preemptible partitions it needs the
# resources of, after their partition's GraceTime (SIGTERM at once, SIGKILL when it ends). A job of partition high takes
# whole nodes, so it preempts every job of low on its node; jobs of main are never preempted (a job of high waits).
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
# Accounting, so sacct (and submitit's state polling) work.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
GresTypes=gpu
# Every node is this whole host: the same CPUs and memory, so each one registers with what it declares.
NodeName=$NODE_LIST NodeHostname=$HOST NodeAddr=127.0.0.1 Port=[$((PORT + 4))-$((PORT + 3 + NODES))] CPUs=$CPUS RealMemory=$REAL_MEM Gres=gpu:2 State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE_LIST Default=YES PriorityTier=1 PreemptMode=OFF MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
PartitionName=low Nodes=$NODE_LIST PriorityTier=1 PreemptMode=REQUEUE GraceTime=10 MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
PartitionName=high Nodes=$NODE_LIST PriorityTier=2 PreemptMode=OFF MaxTime=INFINITE State=UP OverSubscribe=EXCLUSIVE
EOC

# --- slurmdbd + cluster registration -----------------------------------------------------------
if ! pid_alive /run/slurmdbd.pid slurmdbd; then
    # slurmdbd reads slurmdbd.conf beside $SLURM_CONF: the suite's, whatever the instance.
    SLURM_CONF=/etc/slurm/slurm.conf timeout 30 slurmdbd </dev/null >>"$LOG/slurmdbd.out" 2>&1 \
        || die "slurmdbd did not start, see $LOG/slurmdbd.log"
fi
wait_for 60 "slurmdbd (see $LOG/slurmdbd.log)" sacctmgr -n list cluster
if ! timeout 10 sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    timeout 20 sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi

# --- slurmctld + slurmd -----------------------------------------------------------------------
stop_pid() { # stop_pid PIDFILE NAME : TERM, then KILL after 20 s
    pid_alive "$1" "$2" || return 0
    local pid; pid=$(cat "$1")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || return 0; sleep 1; done
    kill -KILL "$pid" 2>/dev/null || true
}
nodes() { seq -f 'n%g' 1 "$NODES"; }
if ((conf_changed)); then
    # Node/gres changes are not picked up by "scontrol reconfigure": restart the daemons.
    stop_pid "$CTLD_PID" slurmctld
    for node in $(nodes); do stop_pid "$(slurmd_pid "$node")" slurmd; done
    [[ -n $INSTANCE ]] || stop_pid /run/slurmd.pid slurmd   # the one-node cluster's slurmd, before this script grew
fi
if ! pid_alive "$CTLD_PID" slurmctld; then
    timeout 30 slurmctld -f "$SLURM_CONF" </dev/null >>"$LOG/slurmctld$TAG.out" 2>&1 \
        || die "slurmctld did not start, see $LOG/slurmctld$TAG.log"
fi
wait_for 30 "slurmctld (see $LOG/slurmctld$TAG.log)" scontrol ping
for node in $(nodes); do
    mkdir -p "/var/spool/slurmd$TAG/$node"
    if ! pid_alive "$(slurmd_pid "$node")" slurmd; then
        timeout 30 slurmd -f "$SLURM_CONF" -N "$node" </dev/null >>"$LOG/slurmd$TAG-$node.out" 2>&1 \
            || die "slurmd of $node did not start, see $LOG/slurmd$TAG-$node.log"
    fi
done

# --- wait for the nodes and accounting --------------------------------------------------------
deadline=$((SECONDS + 90))
resumed=0
until nodes_up && sacct_ok; do
    ((SECONDS < deadline)) || die "timed out after 90s: nodes '$(node_states | paste -sd, || true)'," \
        "sacct $(sacct_ok && echo ok || echo failing); see $LOG/"
    # Nodes left down/drained by an earlier run or test (their slurmd answers now): put them back once.
    down=$(node_states | awk '$2 ~ /^(down|drained|draining|drain|fail|failing)$/ {print $1}' | paste -sd, || true)
    if ((!resumed)) && [[ -n $down ]]; then
        timeout 10 scontrol update nodename="$down" state=resume >/dev/null 2>&1 || true
        resumed=1
    fi
    sleep 1
done
echo "slurm cluster up: $(summary)"
