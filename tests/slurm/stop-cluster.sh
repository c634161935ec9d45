#!/usr/bin/env bash
# Stop the test cluster started by start-cluster.sh: slurmctld/slurmd, slurmdbd, MariaDB, munged.
set -euo pipefail

# stop_pid PIDFILE NAME : TERM the daemon (only if the pid really is NAME), KILL it after 20 s
stop_pid() {
    [[ -s $1 ]] || return 0
    local pid; pid=$(cat "$1")
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || return 0; sleep 1; done
    kill -KILL "$pid" 2>/dev/null || true
}

# scontrol shutdown stops slurmctld and slurmd; the pid files cover a controller that does not answer.
if command -v scontrol >/dev/null; then timeout 20 scontrol shutdown >/dev/null 2>&1 || true; fi
stop_pid /run/slurmctld.pid slurmctld
stop_pid /run/slurmd.pid slurmd
stop_pid /run/slurmdbd.pid slurmdbd
if command -v mysqladmin >/dev/null; then timeout 30 mysqladmin shutdown >/dev/null 2>&1 || true; fi
stop_pid /run/mysqld/mysqld.pid mariadbd
stop_pid /run/munge/munged.pid munged
echo "slurm cluster stopped"
