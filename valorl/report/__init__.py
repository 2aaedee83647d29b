"""Reports over many runs: `valorl report RUN_DIR... --out DIR`.

Runs are grouped into algorithms and tasks (`gather`), their final scores aggregated with
stratified-bootstrap intervals, performance profiles, probabilities of improvement and learning
curves (`analyze`, after Agarwal et al. 2021, "Deep RL at the Edge of the Statistical
Precipice"), drawn (`figures`) and written as a self-contained HTML page with PNGs and a
`summary.json` (`html`, `build`).
"""

from valorl.report.build import build_report

__all__ = ["build_report"]
