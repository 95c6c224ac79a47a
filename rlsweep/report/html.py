"""`report.html`: one self-contained page comparing sweeps side by side (plotly inlined once,
no network needed to open it)."""

from __future__ import annotations

import base64
import html
import time
from pathlib import Path

import optuna
import plotly.graph_objects as go

from rlsweep.config import first_line
from rlsweep.files import write_text_atomic
from rlsweep.report.data import CellData, SweepData
from rlsweep.report.film import STRIP_FILE
from rlsweep.report.stats import METHOD

TOP_TRIALS = 3  # learning curves drawn per cell
STYLE = """body{font-family:system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}.row{display:flex;flex-wrap:wrap}
.row>div{width:33%;min-width:380px}.note{color:#555;max-width:900px}"""


class _Figures:
    """Renders plotly figures; only the first carries plotly.js (inline, offline)."""

    def __init__(self) -> None:
        self.first = True

    def __call__(self, fig: go.Figure, height: int = 380) -> str:
        fig.update_layout(height=height, margin=dict(l=50, r=20, t=50, b=40))
        out = fig.to_html(full_html=False, include_plotlyjs=self.first, include_mathjax=False)
        self.first = False
        return out


def _label(sweep: SweepData, cell: str, several: bool) -> str:
    return f"{sweep.name}/{cell}" if several else cell


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else html.escape(str(value))


def _cells_table(sweeps: list[SweepData], several: bool) -> str:
    head = ("cell", "success rate", "return", "objective", "best trial", "complete", "pruned",
            "failed", "env steps", "wall time s", "best params")
    rows = ["<tr>" + "".join(f'<th class="{"l" if h in ("cell", "best params") else ""}">{h}</th>'
                             for h in head) + "</tr>"]
    for sweep in sweeps:
        for name, cell in sweep.cells.items():
            s = cell.summary
            params = "<br>".join(f"{html.escape(k)} = {_fmt(v)}" for k, v in s.get("best_params", {}).items())
            cols = [("best_success_rate", _fmt(s.get("best_success_rate"), 3)),
                    ("best_mean_return", _fmt(s.get("best_mean_return"), 4)),
                    ("best_value", _fmt(s.get("best_value"), 6)), ("best_trial", _fmt(s.get("best_trial"))),
                    ("n_complete", s.get("n_complete")), ("n_pruned", s.get("n_pruned")),
                    ("n_failed", s.get("n_failed")), ("env_steps", s.get("env_steps")),
                    ("wall_time_s", _fmt(s.get("wall_time_s"), 5))]
            rows.append(f'<tr data-cell="{html.escape(_label(sweep, name, several))}">'
                        f'<td class="l">{html.escape(_label(sweep, name, several))}</td>'
                        + "".join(f'<td data-key="{k}">{v}</td>' for k, v in cols)
                        + f'<td class="l">{params}</td></tr>')
    return ("<table>" + "".join(rows) + "</table><p class='note'>Success rate and return: the best "
            "trial's last evaluation. Objective: what the sweeper ranked trials by.</p>")


def _policy_section(sweeps: list[SweepData], captions: dict[str, str]) -> str:
    """Each sweep's best trial filmed (best_policy.png, inlined), or why there is no film."""
    parts = []
    for sweep in sweeps:
        strip = sweep.path / STRIP_FILE
        caption = html.escape(captions.get(sweep.name) or "the best trial's policy, one episode")
        if strip.exists():
            data = base64.b64encode(strip.read_bytes()).decode()
            parts.append(f"<figure><img alt='best policy of {html.escape(sweep.name)}' "
                         f"style='max-width:100%' src='data:image/png;base64,{data}'>"
                         f"<figcaption class='note'>{html.escape(sweep.name)}: {caption}</figcaption>"
                         "</figure>")
        else:
            parts.append(f"<p class='note'>{html.escape(sweep.name)}: no film ({caption}).</p>")
    return "".join(parts)


def _best_trials(cell: CellData, maximize: bool) -> list:
    """Top trials by value (complete) or by last reported value (pruned)."""
    def score(t):
        v = t.value if t.value is not None else (
            t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None)
        return float("-inf") if v is None else (v if maximize else -v)
    ranked = [t for t in cell.trials if t.curve and t.state in ("COMPLETE", "PRUNED")]
    return sorted(ranked, key=score, reverse=True)[:TOP_TRIALS]


def _curves(sweeps: list[SweepData], several: bool, key: str, title: str) -> go.Figure:
    fig = go.Figure()
    for sweep in sweeps:
        for name, cell in sweep.cells.items():
            for rank, t in enumerate(_best_trials(cell, sweep.direction == "maximize")):
                label = f"{_label(sweep, name, several)} #{t.number}"
                x = [row["env_steps"] for row in t.curve]
                y = [row[key] for row in t.curve]
                fig.add_trace(go.Scatter(x=x, y=y, name=label, legendgroup=label, mode="lines+markers",
                                         line=dict(width=3 if rank == 0 else 1.2,
                                                   dash="solid" if t.state == "COMPLETE" else "dot")))
                if t.state == "PRUNED":
                    fig.add_trace(go.Scatter(x=x[-1:], y=y[-1:], mode="markers", legendgroup=label,
                                             showlegend=False, name=f"{label} pruned",
                                             marker=dict(symbol="x", size=12, color="red")))
    fig.update_layout(title=title + " (red x: pruned here)", xaxis_title="env steps",
                      yaxis_title=key.replace("_", " "))
    if key == "success_rate":
        fig.update_yaxes(range=[-0.05, 1.05])
    return fig


def _optuna_plots(cell: CellData, direction: str, figures: _Figures) -> str:
    study = cell.study(direction)
    parts = []
    plots = (("optimization history", optuna.visualization.plot_optimization_history),
             ("parameter importances", optuna.visualization.plot_param_importances),
             ("parallel coordinates", optuna.visualization.plot_parallel_coordinate))
    for title, plot in plots:
        try:
            fig = plot(study)
            fig.update_layout(title=f"{cell.name}: {title}")
            parts.append(f"<div>{figures(fig, 340)}</div>")
        except Exception as err:  # e.g. importances need two complete trials with varied params
            parts.append(f'<div><p class="note">{cell.name}: {title} not available '
                         f'({html.escape(first_line(err) or type(err).__name__)})</p></div>')
    return '<div class="row">' + "".join(parts) + "</div>"


def _confirm_section(sweeps: list[SweepData], several: bool) -> str:
    confirmed = [(s, s.confirm) for s in sweeps if s.confirm]
    if not confirmed:
        return ('<p class="note">No confirmation yet. A cell\'s best value was picked on one seed '
                "and is biased upward; run <code>python -m rlsweep.confirm &lt;sweep dir&gt; "
                "seeds=5</code> to retrain each cell's best configuration on fresh seeds and "
                "report interquartile means (IQM) with confidence intervals here.</p>")
    rows = ["<tr><th class='l'>cell</th><th>seeds</th><th>IQM success rate [95% CI]</th>"
            "<th>IQM return [95% CI]</th><th>best trial</th></tr>"]
    labels = []
    for sweep, conf in confirmed:
        for name, c in conf["cells"].items():
            label = _label(sweep, name, several)
            labels.append((label, c))
            ci = lambda v: f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"  # noqa: E731
            rows.append(f'<tr data-confirm="{html.escape(label)}"><td class="l">{html.escape(label)}</td>'
                        f"<td>{len(c['seeds'])}</td><td>{ci(c['iqm_success_rate'])}</td>"
                        f"<td>{ci(c['iqm_mean_return'])}</td><td>{c['best_trial']}</td></tr>")
    out = "<table>" + "".join(rows) + "</table>"
    pairs = {}
    for sweep, conf in confirmed:
        for key, v in conf.get("improvement", {}).items():
            a, b = key.split(" > ")
            pairs[(_label(sweep, a, several), _label(sweep, b, several))] = v
    if pairs:
        names = [label for label, _ in labels]
        head = "<tr><th class='l'>P(row &gt; column), success rate</th>" + "".join(
            f"<th>{html.escape(n)}</th>" for n in names) + "</tr>"
        body = "".join("<tr><td class='l'>" + html.escape(a) + "</td>" + "".join(
            f"<td>{pairs[(a, b)][0]:.2f} [{pairs[(a, b)][1]:.2f}, {pairs[(a, b)][2]:.2f}]</td>"
            if (a, b) in pairs else "<td>-</td>" for b in names) + "</tr>" for a in names)
        out += "<table>" + head + body + "</table>"
    return out + f'<p class="note"><b>Method:</b> {html.escape(METHOD)}</p>'


def write_report(sweeps: list[SweepData], out: Path, captions: dict[str, str] | None = None) -> Path:
    """Write the self-contained report comparing `sweeps`; returns its path. `captions` says
    per sweep name what its best_policy.png shows (or why it has none)."""
    several = len(sweeps) > 1
    figures = _Figures()
    parts = [f"<h1>rlsweep report</h1><p class='note'>Generated {time.strftime('%Y-%m-%d %H:%M')}"
             " from " + ", ".join(f"<code>{html.escape(str(s.path))}</code> ({html.escape(s.name)},"
                                  f" {s.direction} {s.metric})" for s in sweeps) + "</p>",
             "<h2>Cells</h2>", _cells_table(sweeps, several),
             "<h2>The best trial's policy</h2>", _policy_section(sweeps, captions or {}),
             "<h2>Confirmation on fresh seeds</h2>", _confirm_section(sweeps, several),
             "<h2>Learning curves of the best trials</h2>",
             figures(_curves(sweeps, several, "success_rate", "Eval success rate")),
             figures(_curves(sweeps, several, "mean_return", "Eval return"))]
    for sweep in sweeps:
        for name, cell in sweep.cells.items():
            parts.append(f"<h3>Optuna: {html.escape(_label(sweep, name, several))}</h3>")
            parts.append(_optuna_plots(cell, sweep.direction, figures))
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>rlsweep report</title>"
            f"<style>{STYLE}</style></head><body>" + "\n".join(parts) + "</body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(out, page)
