#!/usr/bin/env bash
# A single-node Slurm cluster on 127.0.0.1 for the tests (and for trying synthweb on Slurm): munge,
# slurmctld and slurmd with 2 CPUs, one partition "cpu". Needs root and Debian's slurm-wlm + munge
# (installed here when missing). Idempotent: a running cluster is left as it is.
# Undo with scripts/slurm-down.sh.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "slurm-up: needs root (it installs packages and starts daemons)" >&2; exit 1; }
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
fi
if scontrol ping 2>/dev/null | grep -q "is UP" && sinfo -h -o %T 2>/dev/null | grep -qE "idle|mixed|alloc"; then
  echo "slurm-up: already running"; exit 0
fi
CPUS=$(nproc); MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /etc/munge
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=synthweb
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# no batching delay: a job (an array task) starts as soon as a CPU is free, not on the next 3-second tick
# (Slurm's default batch_sched_delay=3; 10 tasks of 0.3 s on 2 CPUs: 13.3 s -> 4.6-5.2 s)
SchedulerParameters=batch_sched_delay=0
DependencyParameters=kill_invalid_depend   # a job whose dependency can never be met is cancelled, not left pending
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ReturnToService=2
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
pgrep -x munged >/dev/null || runuser -u munge -- munged
# a half-started cluster of ours (from our pid files only: never a daemon we did not start)
for pidfile in /run/slurmctld.pid /run/slurmd.pid; do
  [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
done
sleep 0.5
slurmctld -c     # -c: a clean start, no saved jobs
slurmd -N localhost
touch /run/synthweb-slurm-up   # slurm-down stops only a cluster this script started
for _ in $(seq 1 60); do
  if sinfo -h -o %T 2>/dev/null | grep -qE "^(idle|mixed|alloc)"; then
    echo "slurm-up: single-node cluster on 127.0.0.1, partition cpu, $CPUS CPUs"; exit 0
  fi
  sleep 0.5
done
echo "slurm-up: the cluster did not come up; see /var/log/slurm/slurmctld.log and slurmd.log" >&2
sinfo >&2 || true
exit 1
