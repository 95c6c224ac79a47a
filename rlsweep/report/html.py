"""`report.html`: one self-contained page comparing sweeps side by side (plotly inlined once,
no network needed to open it)."""

from __future__ import annotations

import base64
import html
import itertools
import time
import warnings
from pathlib import Path

import optuna
import plotly.graph_objects as go

from rlsweep.config import first_line
from rlsweep.files import write_text_atomic
from rlsweep.report.data import CellData, ConfirmedCell, SweepData
from rlsweep.report.film import STRIP_FILE
from rlsweep.report.stats import METHOD, Improvement

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
    # no success column when no cell's env has a notion of success (Pendulum): "-" or 0 would
    # read as a measured failure
    with_success = any(sweep.reports_success for sweep in sweeps)
    head = ("cell", "success rate", "return", "objective", "best trial", "complete", "pruned",
            "failed", "env steps", "wall time s", "best params")
    if not with_success:
        head = tuple(h for h in head if h != "success rate")
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
            if not with_success:
                cols = cols[1:]
            rows.append(f'<tr data-cell="{html.escape(_label(sweep, name, several))}">'
                        f'<td class="l">{html.escape(_label(sweep, name, several))}</td>'
                        + "".join(f'<td data-key="{k}">{v}</td>' for k, v in cols)
                        + f'<td class="l">{params}</td></tr>')
    measured = "Success rate and return" if with_success else "Return"
    return ("<table>" + "".join(rows) + f"</table><p class='note'>{measured}: the best trial's, "
            "each the mean of its last <code>value_last_evals</code> evaluations "
            "(<code>hydra.sweeper.value_last_evals</code>, 3 by default; with several seeds, of "
            "their aggregate at each evaluation), the numbers its objective value is made of. "
            "Objective: what the sweeper ranked trials by.</p>")


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
        v = t.first_value if t.value is not None else (
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
                if not any(key in row for row in t.curve):  # no success rate on its env
                    continue
                x = [row["env_steps"] for row in t.curve]
                y = [row.get(key) for row in t.curve]
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


def _quiet_importances(study: optuna.Study, target: dict):
    """plot_param_importances with a lower-is-better `target`, without Optuna's warning that
    its evaluator takes a target as lower-is-better (the caller made it so)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*importances of params to achieve low",
                                category=UserWarning)
        return optuna.visualization.plot_param_importances(study, **target)


def _optuna_plots(cell: CellData, sweep: SweepData, figures: _Figures) -> str:
    study = cell.study(sweep.directions)
    parts = []
    if sweep.multi:  # the front first; the other plots show the first objective
        first = {"target": lambda t: t.values[0], "target_name": sweep.metrics[0]}
        # Optuna's importance evaluator (PED-ANOVA) takes a given target as lower-is-better
        # and warns so each time: a maximized objective is negated for it.
        sign = -1.0 if sweep.directions[0] == "maximize" else 1.0
        lower_is_better = {"target": lambda t: sign * t.values[0],
                           "target_name": sweep.metrics[0]}
        plots = (("Pareto front", lambda s: optuna.visualization.plot_pareto_front(
                    s, target_names=sweep.metrics)),
                 ("parameter importances (first objective)",
                  lambda s: _quiet_importances(s, lower_is_better)),
                 ("parallel coordinates (first objective)",
                  lambda s: optuna.visualization.plot_parallel_coordinate(s, **first)))
    else:
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


def _pareto_section(sweeps: list[SweepData], several: bool) -> str:
    """Multi-objective sweeps: the trials no other trial beats in every objective, across
    cells (sweep_summary.json `pareto`), as a table."""
    parts = []
    for sweep in sweeps:
        if not sweep.multi or sweep.pareto is None:
            continue
        heads = "".join(f"<th>{html.escape(m)} ({d})</th>"
                        for m, d in zip(sweep.metrics, sweep.directions))
        success = sweep.reports_success  # no success column when no cell's env has one
        rows = "".join(
            f"<tr><td>{html.escape(_label(sweep, p['cell'], several))}</td><td>{p['trial']}</td>"
            + "".join(f"<td>{_fmt(v)}</td>" for v in p["values"])
            + (f"<td>{_fmt(p.get('success_rate'), 2)}</td>" if success else "")
            + f"<td>{_fmt(p.get('mean_return'), 1)}</td>"
            + "<td>" + html.escape(", ".join(f"{k.split('.')[-1]}={_fmt(v, 3)}"
                                             for k, v in p["params"].items())) + "</td></tr>"
            for p in sweep.pareto)
        parts.append(f"<h3>Pareto front of {html.escape(sweep.name)} across cells "
                     f"({len(sweep.pareto)} trials)</h3><p class='note'>No trial is at least as "
                     "good in every objective and better in one. Each cell's own front is in "
                     "sweep_summary.json (<code>pareto</code>) and in its Optuna plots below."
                     "</p><table><tr><th>cell</th><th>trial</th>" + heads
                     + ("<th>success</th>" if success else "")
                     + "<th>return</th><th>params</th></tr>" + rows + "</table>")
    return "".join(parts)


def sweep_prefixes(sweeps: list[SweepData]) -> list[str]:
    """What names each sweep in the confirmation section: its name, or its name and dir when
    two sweeps compared share a name.

    :param sweeps: the sweeps compared, in report order
    """
    names = [s.name for s in sweeps]
    return [f"{s.name} ({s.path})" if names.count(s.name) > 1 else s.name for s in sweeps]


def confirm_label(prefix: str, cell: str) -> str:
    """A confirmed cell's label in a comparison: "<sweep>/<cell>"."""
    return f"{prefix}/{cell}"


CONFIRM_COMMAND = "python -m rlsweep.confirm {dir} seeds=5"
# what P(A > B) compares, in words (return where an env has no notion of success)
_SCORE_WORDS = {"success_rate": "success rate", "mean_return": "return"}


def _interval(value: tuple[float, float, float] | None, digits: str) -> str:
    if value is None:
        return "-"
    return f"{value[0]:{digits}} [{value[1]:{digits}}, {value[2]:{digits}}]"


def _failures(cell: ConfirmedCell, recorded: bool) -> str:
    """Which seeds scored as failures: "none" or "1 of 5: seed 1003 diverged", each with why."""
    if not recorded:
        return "not recorded (older confirm.json)"
    if not cell.failures:
        return "none"
    return f"{len(cell.failures)} of {len(cell.seeds)}: " + ", ".join(
        f'<span title="{html.escape(s.detail)}">seed {s.seed} {html.escape(s.status)}</span>'
        for s in cell.failures)


def _improvement_cell(pair: Improvement | None, a: str, b: str) -> str:
    if pair is None:
        return "<td>-</td>"
    return (f'<td data-a="{html.escape(a)}" data-b="{html.escape(b)}">'
            f"{_interval((pair.probability, pair.low, pair.high), '.2f')}</td>")


def _confirm_notes(sweep: SweepData, prefix: str, several: bool) -> list[str]:
    """What a reader must know to trust one sweep's confirmation: few seeds, how failures scored."""
    conf = sweep.confirm
    who = f"{html.escape(prefix)}: " if several else ""
    notes = []
    if conf.few_seeds_note:
        notes.append(f"{who}<b>Few seeds.</b> {html.escape(conf.few_seeds_note)}.")
    if not conf.scores_failures:
        notes.append(f"{who}<b>Failures not scored.</b> This confirm.json was written before "
                     "seeds that diverged or failed were scored (success 0, worst return); they "
                     "were dropped, so its cells may look better than they are. Rerun <code>"
                     f"{html.escape(CONFIRM_COMMAND.format(dir=sweep.path))}</code> (seeds that "
                     "finished are not retrained).")
    elif any(c.failures for c in conf.cells.values()):
        success = "success 0 and " if any(c.reports_success for c in conf.cells.values()) else ""
        notes.append(f"{who}Seeds that diverged or failed count with {success}return "
                     f"{_fmt(conf.worst_return)}, {html.escape(conf.worst_return_rule)}.")
    for name, reason in conf.skipped.items():
        notes.append(f"{who}{html.escape(name)} not confirmed: {html.escape(reason)}.")
    return notes


def _confirm_section(sweeps: list[SweepData], several: bool,
                     cross_sweep: list[Improvement] | None = None) -> str:
    """IQMs per confirmed cell, P(row > column) for every pair of confirmed cells (within a
    sweep from its confirm.json, between sweeps from `cross_sweep`), and what is missing."""
    prefixes = sweep_prefixes(sweeps)
    confirmed = [(s, p) for s, p in zip(sweeps, prefixes) if s.confirm]
    missing = [(s, p) for s, p in zip(sweeps, prefixes) if not s.confirm]
    out = ""
    if not confirmed:
        out += ('<p class="note">No confirmation yet. A cell\'s best value was picked on one seed '
                "and is biased upward; run <code>python -m rlsweep.confirm &lt;sweep dir&gt; "
                "seeds=5</code> to retrain each cell's best configuration on fresh seeds and "
                "report interquartile means (IQM) with confidence intervals here.</p>")
    if several and missing:
        out += "".join(
            f'<p class="note" data-unconfirmed="{html.escape(p)}">{html.escape(p)} has no '
            "confirmation results (confirm.json), so P(A &gt; B) against its cells needs "
            f"<code>{html.escape(CONFIRM_COMMAND.format(dir=s.path))}</code> first.</p>"
            for s, p in missing)
    if not confirmed:
        return out

    def label(prefix: str, cell: str) -> str:  # one sweep: its cells' own names
        return confirm_label(prefix, cell) if several else cell

    # no success column when no confirmed cell's env has a notion of success
    with_success = any(c.reports_success for s, _ in confirmed for c in s.confirm.cells.values())
    rows = ["<tr><th class='l'>cell</th><th>seeds</th><th class='l'>scored as failures</th>"
            + ("<th>IQM success rate [95% CI]</th>" if with_success else "")
            + "<th>IQM return [95% CI]</th><th>best trial</th></tr>"]
    names, pairs, notes = [], {}, []
    for sweep, prefix in confirmed:
        for name, c in sweep.confirm.cells.items():
            names.append(label(prefix, name))
            rows.append(f'<tr data-confirm="{html.escape(names[-1])}">'
                        f'<td class="l">{html.escape(names[-1])}</td><td>{len(c.seeds)}</td>'
                        f'<td class="l">{_failures(c, sweep.confirm.scores_failures)}</td>'
                        + (f"<td>{_interval(c.iqm_success_rate, '.2f')}</td>" if with_success
                           else "")
                        + f"<td>{_interval(c.iqm_mean_return, '.4g')}</td>"
                        f"<td>{'defaults' if c.best_trial is None else c.best_trial}</td></tr>")
        for pair in sweep.confirm.improvement:
            pairs[(label(prefix, pair.a), label(prefix, pair.b))] = pair
        notes += _confirm_notes(sweep, prefix, several)
    for pair in cross_sweep or []:
        pairs[(pair.a, pair.b)] = pair
    out += "<table>" + "".join(rows) + "</table>"
    if pairs:
        compared = " / ".join(sorted({_SCORE_WORDS[p.metric] for p in pairs.values()}))
        head = f"<tr><th class='l'>P(row &gt; column), {compared}</th>" + "".join(
            f"<th>{html.escape(n)}</th>" for n in names) + "</tr>"
        body = "".join("<tr><td class='l'>" + html.escape(a) + "</td>" + "".join(
            _improvement_cell(pairs.get((a, b)), a, b) for b in names) + "</tr>" for a in names)
        out += "<table>" + head + body + "</table>"
    out += _same_cell_between_sweeps(confirmed, cross_sweep or [])
    out += "".join(f'<p class="note">{n}</p>' for n in notes)
    return out + f'<p class="note"><b>Method:</b> {html.escape(METHOD)}</p>'


def _same_cell_between_sweeps(confirmed: list[tuple[SweepData, str]],
                              cross_sweep: list[Improvement]) -> str:
    """The question a second sweep usually asks: is its ppo-dense better than the first's?"""
    by_labels = {(p.a, p.b): p for p in cross_sweep}
    compared = " / ".join(sorted({_SCORE_WORDS[p.metric] for p in cross_sweep}))
    lines = []
    for (first, a_prefix), (second, b_prefix) in itertools.combinations(confirmed, 2):
        for name in first.confirm.cells:
            a, b = confirm_label(a_prefix, name), confirm_label(b_prefix, name)
            if name in second.confirm.cells and (a, b) in by_labels:
                pair = by_labels[(a, b)]
                lines.append(f'<li data-same-cell="{html.escape(name)}">P({html.escape(a)} &gt; '
                             f"{html.escape(b)}) = "
                             f"{_interval((pair.probability, pair.low, pair.high), '.2f')}</li>")
    if not lines:
        return ""
    return (f"<p>The same cell in two sweeps ({compared} over fresh seeds; 0.5 = no difference):"
            "</p><ul>" + "".join(lines) + "</ul>")


def write_report(sweeps: list[SweepData], out: Path, captions: dict[str, str] | None = None,
                 cross_sweep: list[Improvement] | None = None) -> Path:
    """Write the self-contained report comparing `sweeps`; returns its path. `captions` says
    per sweep name what its best_policy.png shows (or why it has none); `cross_sweep` holds
    P(A > B) between cells of different sweeps (rlsweep.report.build.cross_sweep_improvements)."""
    several = len(sweeps) > 1
    figures = _Figures()
    parts = [f"<h1>rlsweep report</h1><p class='note'>Generated {time.strftime('%Y-%m-%d %H:%M')}"
             " from " + ", ".join(f"<code>{html.escape(str(s.path))}</code> ({html.escape(s.name)},"
                                  f" {s.direction} {s.metric})" for s in sweeps) + "</p>",
             "<h2>Cells</h2>", _cells_table(sweeps, several), _pareto_section(sweeps, several),
             "<h2>The best trial's policy</h2>", _policy_section(sweeps, captions or {}),
             "<h2>Confirmation on fresh seeds</h2>", _confirm_section(sweeps, several, cross_sweep),
             "<h2>Learning curves of the best trials</h2>"]
    if any(sweep.reports_success for sweep in sweeps):  # none where no env has success
        parts.append(figures(_curves(sweeps, several, "success_rate", "Eval success rate")))
    parts.append(figures(_curves(sweeps, several, "mean_return", "Eval return")))
    for sweep in sweeps:
        for name, cell in sweep.cells.items():
            parts.append(f"<h3>Optuna: {html.escape(_label(sweep, name, several))}</h3>")
            parts.append(_optuna_plots(cell, sweep, figures))
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>rlsweep report</title>"
            f"<style>{STYLE}</style></head><body>" + "\n".join(parts) + "</body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(out, page)
