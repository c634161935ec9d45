#!/usr/bin/env bash
# Stop the test cluster started by start-cluster.sh: slurmctld and every node's slurmd; with no instance named, also
# the daemons every instance shares: slurmdbd, MariaDB, munged.
# SHARDPREP_SLURM_INSTANCE=<name> stops only that instance's slurmctld and slurmds (see start-cluster.sh).
set -euo pipefail

INSTANCE=${SHARDPREP_SLURM_INSTANCE:-}
TAG=${INSTANCE:+-$INSTANCE}
export SLURM_CONF=/etc/slurm$TAG/slurm.conf

# stop_pid PIDFILE NAME : TERM the daemon (only if the pid really is NAME), KILL it after 20 s
stop_pid() {
    [[ -s $1 ]] || return 0
    local pid; pid=$(cat "$1")
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || return 0; sleep 1; done
    kill -KILL "$pid" 2>/dev/null || true
}

# scontrol shutdown stops slurmctld and the slurmds; the pid files cover daemons that do not answer.
if command -v scontrol >/dev/null && [[ -f $SLURM_CONF ]]; then timeout 20 scontrol shutdown >/dev/null 2>&1 || true; fi
stop_pid "/run/slurmctld$TAG.pid" slurmctld
for pidfile in /run/slurmd"$TAG"-n*.pid; do
    [[ -e $pidfile ]] && stop_pid "$pidfile" slurmd
done
if [[ -z $INSTANCE ]]; then
    stop_pid /run/slurmd.pid slurmd   # the one-node cluster's slurmd, before start-cluster.sh grew nodes
    stop_pid /run/slurmdbd.pid slurmdbd
    if command -v mysqladmin >/dev/null; then timeout 30 mysqladmin shutdown >/dev/null 2>&1 || true; fi
    stop_pid /run/mysqld/mysqld.pid mariadbd
    stop_pid /run/munge/munged.pid munged
fi
echo "slurm cluster${INSTANCE:+ $INSTANCE} stopped"
