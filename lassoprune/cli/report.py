"""``lassoprune report``: markdown, JSON and PNG report of one or several finished runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from lassoprune.cli._common import print_json
from lassoprune.errors import LassopruneError
from lassoprune.report import load_summaries, render_report

HELP = "write a report (markdown, JSON, PNG figures) of one or several pruning runs"
EPILOG = """\
examples:
  lassoprune report runs/r56-sglp-0.5                        # writes into the run directory
  lassoprune report runs/r56-* --out reports/r56             # compares several runs
  lassoprune report runs/a/summary.json runs/b --out cmp --json

Each RUN is a run directory holding summary.json (written by `lassoprune run`) or
the summary.json file itself. The report is report.md, report.json (the summaries
plus MACs / params ratios, accuracy drops and speed-up) and the figures
channels_per_layer.png, per_class_accuracy.png, class_structure.png (runs with a
class tree or graph) and tradeoff.png.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help=HELP, description=HELP, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directory or summary.json")
    parser.add_argument("--out", metavar="DIR", help="report directory (default with one run: the run directory)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out = _out_dir(args.runs, args.out)
    files = render_report(load_summaries(args.runs), out)
    if args.json:
        print_json(files.to_dict())
    else:
        print("\n".join(str(path) for path in files.paths()))
    return 0


def _out_dir(runs: list[str], out: str | None) -> Path:
    """``--out``, else the directory of the only run."""
    if out:
        return Path(out)
    if len(runs) > 1:
        raise LassopruneError(f"{len(runs)} runs given: name the report directory with --out DIR")
    run = Path(runs[0])
    return run if run.is_dir() else run.parent
