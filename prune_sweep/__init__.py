"""prune_sweep: sweeps of prune_core experiments and their analysis.

Modules that read and plan a sweep or analyse its results never import Ray; only the modules that
run trials do (ARCHITECTURE.md, "Layout"). ``launch.py`` and ``analyze.py`` at the repository
root are thin entry scripts for ``prune_sweep``'s command lines.
"""
