"""What the benchmark scripts share: statistics, the resumable results file, markdown tables, method settings.

The scripts in ``benchmarks/`` run as ``python benchmarks/NAME.py``, which puts that folder on ``sys.path``;
they import this package as ``bench`` (``from bench.stats import Estimate``).

Modules:
    stats: mean and standard error over seeds, and the two-standard-error comparison.
    results: the JSON file of finished rows that a rerun resumes from.
    tables: markdown tables.
    settings: every set of method options the scripts pass to ``lp.prune``, each named once.
"""
