"""Evaluation: rollouts, loaded policies, re-evaluation of runs, summary statistics."""
