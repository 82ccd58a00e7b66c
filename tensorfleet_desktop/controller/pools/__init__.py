"""Pools: capacity on another cluster's scheduler (Slurm) that starts agents while queued work needs them (issue 25)."""
