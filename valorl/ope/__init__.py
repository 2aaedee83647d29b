"""Off-policy evaluation: a policy's value estimated from logged data (FQE, PDIS, weighted
PDIS, doubly robust), checked against rollouts, and judged by how well it selects policies.

    from valorl.ope import run_ope
    result = run_ope(["runs/iql", "runs/bc"], "valorl/pendulum-mixed-v0", episodes=20)
"""

from valorl.ope.run import ESTIMATORS, run_ope

__all__ = ["ESTIMATORS", "run_ope"]
