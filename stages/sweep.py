"""The sweep over one student's KD weights, aggregated: the seed study's follow-up (c).

Not a stage of the DAG: each point of a sweep is an experiment of its own, which DVC's queue runs
(README, "Follow-ups"), and this command reads them all back::

    dvc exp run --queue -S 'distill.student_t20.w_enc=0,0.5,1' -S 'distill.student_t20.w_dec=0.5,1,2'
    dvc queue start -j 1          # wait: dvc queue status
    python -m stages.sweep student_t20

It collects every experiment of `dvc exp show --json` (the workspace and HEAD too) that has the two
params, the workspace's params otherwise (what the sweep was queued from) and the student's entry in
``metrics/summary.json`` (capt.eval.sweep), and writes
``results/sweep/<student>.md`` (per test set of ``study.test_sets``: a row per ``--x`` value, a column
per ``--y`` value, the student's BLEU-4 and its paired difference to ``student_base`` with the 95%
interval, as the report computed it in that experiment) and ``results/sweep/<student>.json`` (every
point, its experiment and its scores). An experiment that failed or predates the student is left
out and named in the log.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Optional

import typer

from capt.errors import CaptError
from capt.eval.sweep import sweep_grid, sweep_points
from stages._common import PARAMS, StudyConfig, read_config, stage_main, write_atomic, write_json

log = logging.getLogger("stages.sweep")


def experiments_from_dvc(repo: Path = Path(".")) -> list[dict]:
    """Every revision `dvc exp show --json` lists (the workspace, the commit, its experiments) as
    ``{"name", "params", "summary"}``: params.yaml and metrics/summary.json at that revision, None
    where missing. The files are read from git (both are committed: summary.json is ``cache: false``)
    because `dvc exp show` leaves out the metrics that are not numbers, the ``..._ci95`` intervals."""
    run = subprocess.run(["dvc", "exp", "show", "--json"], cwd=repo, capture_output=True, text=True)
    if run.returncode != 0:
        lines = run.stderr.strip().splitlines()
        raise CaptError(f"dvc exp show failed: {lines[-1] if lines else f'exit status {run.returncode}'}")
    revs = []
    for commit in json.loads(run.stdout):
        revs.append((commit.get("name") or ("workspace" if commit["rev"] == "workspace" else commit["rev"][:7]),
                     commit["rev"]))
        revs += [(rev.get("name") or rev["rev"][:7], rev["rev"]) for exp in commit.get("experiments") or []
                 for rev in exp.get("revs") or []]

    def read(rev: str, path: str) -> str | None:
        if rev == "workspace":
            f = repo / path
            return f.read_text() if f.exists() else None
        shown = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=repo, capture_output=True, text=True)
        return shown.stdout if shown.returncode == 0 else None

    out = []
    for name, rev in revs:
        params, summary = read(rev, "params.yaml"), read(rev, "metrics/summary.json")
        out.append({"name": name, "params": yaml_1_2(params) if params else {},
                    "summary": json.loads(summary) if summary else None})
    return out


def yaml_1_2(text: str) -> dict:
    """YAML read as DVC reads params.yaml (YAML 1.2: after a `dvc exp run -S` a bare ``off`` is the
    string DVC's experiments hold, not PyYAML's false)."""
    from ruamel.yaml import YAML

    return YAML(typ="safe").load(text)


@stage_main
def main(student: str,
         x: Optional[str] = typer.Option(None, help="the row param (default distill.<student>.w_enc)"),
         y: Optional[str] = typer.Option(None, help="the column param (default distill.<student>.w_dec)"),
         out_dir: Path = typer.Option(Path("results/sweep"))) -> None:
    x, y = x or f"distill.{student}.w_enc", y or f"distill.{student}.w_dec"
    test_sets = read_config(StudyConfig, "study").test_sets
    points = sweep_points(experiments_from_dvc(), student, x, y, reference=yaml_1_2(PARAMS.read_text()))
    text = (f"# Sweep: {student} over {x} x {y}\n\n{len(points)} point(s), one experiment each (`dvc exp show`). "
            f"A cell: {student}'s BLEU-4 and, in brackets, its paired difference to student_base with the 95% "
            "bootstrap interval and p (over seeds where the experiment had replicate seeds), as that "
            "experiment's report computed it.\n")
    for dataset in test_sets:
        text += f"\n## {dataset}\n\n" + sweep_grid(points, dataset, x.rsplit(".", 1)[-1], y.rsplit(".", 1)[-1])
    write_atomic(out_dir / f"{student}.md", text)
    write_json(out_dir / f"{student}.json",
               {"x": x, "y": y, "points": [{"experiment": p.experiment, "x": p.x, "y": p.y, "scores": p.scores}
                                           for p in points]}, sort_keys=False)
    log.info("%d point(s) of %s x %s -> %s", len(points), x, y, out_dir / f"{student}.md")


if __name__ == "__main__":
    typer.run(main)
