"""W&B side of a sweep: one summary run per sweep, and a W&B Report comparing sweeps (online).

Trial runs are written by the trials themselves (rlsweep.train via rlsweep.tracking): project
from `logger.project`, group = the sweep's name, job_type = the cell, tags algo/reward/policy
plus the final state, config = the composed config + `param/<path>` for sampled parameters +
`sweep` (the sweep's name, which the W&B Report filters on).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import optuna

from rlsweep.report.data import SweepData
from rlsweep.tracking import start_wandb_run, wandb_mode


def log_sweep_summary(sweep: SweepData, logger_cfg: Mapping[str, Any]) -> str | None:
    """Log a `wandb.Table` of every trial and Optuna's plots per cell; returns the run dir."""
    run = start_wandb_run(logger_cfg, sweep.path, {"sweep": sweep.name, "metric": sweep.metric,
                                                   "direction": sweep.direction,
                                                   "cells": list(sweep.cells)},
                          group=sweep.name, job_type="sweep-summary", name=f"summary-{sweep.name}",
                          tags=["summary"])
    if run is None:
        return None
    import wandb

    param_names = sorted({k for c in sweep.cells.values() for t in c.trials for k in t.params})
    columns = ["cell", "trial", "state", "value", "last_step"] + param_names
    rows = [[name, t.number, t.state, t.value, t.last_step] + [t.params.get(p) for p in param_names]
            for name, cell in sweep.cells.items() for t in cell.trials]
    plots: dict[str, Any] = {"trials": wandb.Table(columns=columns, data=rows)}
    for name, cell in sweep.cells.items():
        study = cell.study(sweep.directions)
        if sweep.multi:
            try:
                plots[f"{name}/pareto_front"] = wandb.Plotly(
                    optuna.visualization.plot_pareto_front(study, target_names=sweep.metrics))
            except Exception:  # no complete trial
                pass
            run.summary[f"{name}/pareto"] = {  # W&B summaries nest dicts, not lists of them
                f"trial {p['trial']}": p["objectives"] for p in cell.summary.get("pareto", [])}
            continue
        for key, plot in (("optimization_history", optuna.visualization.plot_optimization_history),
                          ("param_importances", optuna.visualization.plot_param_importances),
                          ("parallel_coordinate", optuna.visualization.plot_parallel_coordinate),
                          ("slice", optuna.visualization.plot_slice)):
            try:
                plots[f"{name}/{key}"] = wandb.Plotly(plot(study))
            except Exception:  # too few complete trials for this plot: leave it out
                continue
        run.summary[f"{name}/best_value"] = cell.summary.get("best_value")
        run.summary[f"{name}/best_success_rate"] = cell.summary.get("best_success_rate")
        run.summary[f"{name}/best_mean_return"] = cell.summary.get("best_mean_return")
        run.summary[f"{name}/n_pruned"] = cell.summary.get("n_pruned")
    if sweep.pareto is not None:
        run.summary["pareto"] = {f"{p['cell']} trial {p['trial']}": p["objectives"]
                                 for p in sweep.pareto}
        plots["pareto_table"] = wandb.Table(
            columns=["cell", "trial", *sweep.metrics],
            data=[[p["cell"], p["trial"], *p["values"]] for p in sweep.pareto])
    run.log(plots)
    run_dir = run.dir
    run.finish()
    return run_dir


def build_wandb_report(sweeps: list[SweepData], logger_cfg: Mapping[str, Any]):
    """A W&B Report comparing `sweeps` (`.save()` it online; it needs a key)."""
    import wandb_workspaces.reports.v2 as wr

    project, entity = logger_cfg["project"], logger_cfg.get("entity") or os.environ.get("WANDB_ENTITY")
    runsets = [wr.Runset(entity=entity, project=project, name=s.name,
                         filters=f"Config('sweep') == '{s.name}'") for s in sweeps]
    report = wr.Report(
        entity=entity, project=project, title="rlsweep: " + " vs ".join(s.name for s in sweeps),
        description="Best-trial learning curves, success rate per cell, parallel coordinates.",
        blocks=[
            wr.H2("Eval success rate and return"),
            wr.PanelGrid(runsets=runsets, panels=[
                wr.LinePlot(x="env_steps", y=["eval/success_rate"]),
                wr.LinePlot(x="env_steps", y=["eval/mean_return"]),
                wr.BarPlot(metrics=["success_rate"], groupby="job_type")]),
            wr.H2("Parameters"),
            wr.PanelGrid(runsets=runsets, panels=[
                wr.ParallelCoordinatesPlot(columns=[
                    wr.ParallelCoordinatesPlotColumn(metric=m) for m in
                    (wr.Config("algo.learning_rate"), wr.Config("algo.gamma"),
                     wr.SummaryMetric("success_rate"))])]),
        ])
    return report


def is_online(logger_cfg: Mapping[str, Any]) -> bool:
    return logger_cfg["name"] == "wandb" and wandb_mode(logger_cfg) == "online"
