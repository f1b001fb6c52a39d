#!/usr/bin/env bash
# Stops the single-node cluster of scripts/slurm-up.sh (jobs included).
scancel --user=root 2>/dev/null || true
pkill -x slurmd 2>/dev/null || true
pkill -x slurmctld 2>/dev/null || true
echo "slurm-down: stopped"
