#!/usr/bin/env bash
# Stops the single-node cluster of scripts/slurm-up.sh, and only that one: its daemons by their pid
# files, its jobs by id (squeue of this cluster). A cluster slurm-up found running is left alone.
if [ ! -e /run/synthweb-slurm-up ]; then
  echo "slurm-down: no cluster started by slurm-up here; nothing stopped"; exit 0
fi
jobs=$(squeue -h -o %A 2>/dev/null | sort -u)
[ -n "$jobs" ] && scancel $jobs 2>/dev/null || true
for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
  [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
done
rm -f /run/synthweb-slurm-up
echo "slurm-down: stopped"
