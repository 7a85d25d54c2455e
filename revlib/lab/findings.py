"""The findings page: which claims of the two papers this run reproduces, with intervals and a stated rule.

The claims are the registry's entries (`revlib.lab.r1k_claims`, `revlib.lab.setlur_claims`); each reads the run's
typed stage results (`revlib.lab.results.RunResults`). This module evaluates them, adds the benchmarks and the
cross-direction transfer, and writes `outputs/<experiment>/findings.json` and `findings.html`. A claim whose stage
did not run is listed as not covered; a claim whose models did not learn is inconclusive, whatever its numbers say.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from revlib.core.io import JSONObject, Metrics
from revlib.core import io
from revlib.core.stats import chance_accuracy
from revlib.data.world import ALIVE_MARGIN
from revlib.lab import pages, r1k_claims, setlur_claims
from revlib.lab.claims import RULE as RULE_TEMPLATE, Claim, Registry
from revlib.lab.results import RunResults
from revlib.params import Experiment

REGISTRY = Registry(r1k_claims.CLAIMS + setlur_claims.CLAIMS)
RULE = RULE_TEMPLATE.format(min_acc=f"{r1k_claims.LEARNED_MIN_ACCURACY:.0%}", alive=f"{100 * ALIVE_MARGIN:.0f}")
IN_DISTRIBUTION = {"synthetic_forward": "T_f", "synthetic_reverse": "T_r"}


@dataclass(frozen=True)
class BenchmarkRow:
    """One benchmark of 05 on the page: its size, chance, whether in distribution, each model's accuracy; task-world
    benchmarks add whether they are alive and what they measure."""

    name: str
    n: int
    chance: float | None
    in_distribution: bool
    accuracy: dict[str, float]
    alive: bool | None = None
    what: str | None = None

    def as_json(self) -> JSONObject:
        row = asdict(self)
        return row if self.alive is not None else {k: v for k, v in row.items() if k not in ("alive", "what")}


@dataclass(frozen=True)
class TransferRow:
    """A one-direction model on its own direction's questions and on the other direction's."""

    model: str
    benchmark: str
    own_direction: float | None
    n_own: int
    other_direction: float | None
    n_other: int


def benchmarks(results: RunResults) -> list[BenchmarkRow]:
    """One row per benchmark of 05, in results.csv's order; accuracy per model ("<stage>/<train set>")."""
    bench = results.benchmarks
    if bench is None:
        return []
    world = {w.benchmark: w for w in bench.world}
    out = []
    for task in bench.tasks():
        scores = [s for s in bench.scores if s.task == task]
        golds = bench.golds(task)
        w = world.get(task)
        out.append(BenchmarkRow(task, max(s.problems for s in scores),
                                w.chance if w else (chance_accuracy(golds) if golds else None), task in IN_DISTRIBUTION,
                                {s.model: s.accuracy for s in scores},
                                None if w is None else w.alive, None if w is None else w.what))
    return out


def transfer(results: RunResults) -> list[TransferRow]:
    """Cross-direction transfer: each one-direction SFT (and DPO) model's accuracy on its own direction's questions
    and on the other direction's, in distribution (T_f, T_r) and on the task-world benchmarks asked both ways."""
    bench = results.benchmarks
    if bench is None:
        return []
    world_dirs = bench.world_directions()
    tasks = list(IN_DISTRIBUTION) + list(world_dirs)
    rows = []
    for stage, train_set in bench.models():
        scores = bench.per_problem(stage, train_set, tasks)
        if not scores or train_set not in ("forward", "reverse"):
            continue
        other = "reverse" if train_set == "forward" else "forward"

        def acc(task: str, direction: str) -> tuple[float | None, int]:
            vals = [v for (t, k), v in scores.items() if t == task
                    and (task in IN_DISTRIBUTION or world_dirs[task][k] == direction)]
            return (sum(vals) / len(vals), len(vals)) if vals else (None, 0)

        wheres = [("in distribution (T_f, T_r)", f"synthetic_{train_set}", f"synthetic_{other}")] + [(w, w, w) for w in world_dirs]
        for where, own_t, other_t in wheres:
            (own, n_own), (cross, n_cross) = acc(own_t, train_set), acc(other_t, other)
            if own is None and cross is None:
                continue
            rows.append(TransferRow(f"{stage}/{train_set}", where, own, n_own, cross, n_cross))
    return rows


def learned_state(results: RunResults) -> Metrics:
    """The `learned` object: whether each stage's models learned, as numbers (00's skills stay 00's own)."""
    out = r1k_claims.learned(results)
    for key, value in setlur_claims.learned(results).items():
        out.setdefault(key, value)
    if results.failed_gates:  # the run went on past them (require_learning: false): say which models did not learn
        out["failed_gates"] = results.failed_gates
    return out


@dataclass(frozen=True)
class Findings:
    """What findings.json holds."""

    experiment: str
    rule: str
    learned: Metrics
    claims: list[Claim]
    benchmarks: list[BenchmarkRow]
    transfer: list[TransferRow]

    @property
    def covered(self) -> list[str]:
        return sorted({c.paper for c in self.claims})

    def as_json(self) -> JSONObject:
        return {"experiment": self.experiment, "rule": self.rule, "learned": self.learned,
                "claims": [asdict(c) for c in self.claims], "covered": self.covered,
                "benchmarks": [b.as_json() for b in self.benchmarks], "transfer": [asdict(t) for t in self.transfer]}


def evaluate(exp: Experiment) -> Findings:
    """Every claim of the registry on this run's typed results, with the benchmarks and the transfer."""
    results = RunResults(exp)
    return Findings(exp.experiment, RULE, learned_state(results), REGISTRY.evaluate(results), benchmarks(results),
                    transfer(results))


def collect(exp: Experiment) -> JSONObject:
    """findings.json's content."""
    return evaluate(exp).as_json()


def write(exp: Experiment) -> Path | None:
    """findings.json and findings.html in the experiment's run root; None when no stage has finished."""
    found = evaluate(exp)
    if not found.learned and not found.claims:
        return None
    data = found.as_json()
    root = exp.run_root
    io.write_json(root / "findings.json", data)
    io.write_text(root / "findings.html", render(data))
    return root / "findings.html"


_COLOURS = {"reproduced": "#d9f2d9", "not reproduced": "#f8d7d7", "inconclusive": "#f4f0d0"}
_NOT_RUN = {"r1k": "the r1k claims need 02, 03, 04 and 05 (params/demo.yaml)",
            "setlur": "Setlur's scaling claims need 06 (params/negative-data.yaml); the star graph needs 07 (params/star-graph.yaml)"}


def _value(v: object) -> str:
    return json.dumps(v) if isinstance(v, (dict, list)) else f"{v:.4g}" if isinstance(v, float) else str(v)


def render(data: JSONObject) -> str:
    """findings.html from findings.json's content."""
    esc = html.escape

    def verdict_cell(v: str | None, note: str) -> str:
        if v is None:
            return "<td></td>"
        return (f"<td style='background:{_COLOURS.get(v, '#fff')}'><b>{esc(v)}</b>"
                f"{'<br><small>' + esc(note) + '</small>' if note else ''}</td>")

    def delta(c: JSONObject) -> str:
        return "" if c["delta"] is None else f"{c['delta']:.4g}"

    def compares_on(c: JSONObject) -> str:
        return f"<small><i>compares on</i>: {esc(c['compares_on'])}</small><br>" if c.get("compares_on") else ""

    def beside(c: JSONObject) -> str:
        """Further readings of the row (revlib's own measure beside the authors'), each with its verdict."""
        return "".join(
            f"<br><small><i>beside, {esc(b['name'])}</i>: {esc(b['measured'])} → <b>{esc(b['verdict'])}</b>"
            f"{' (' + esc(b['note']) + ')' if b.get('note') else ''}</small>" for b in c.get("beside") or [])

    two_way = [c for c in data["claims"] if c.get("verdict_held_out") is not None]
    rows = "".join(
        f"<tr><td>{esc(c['paper'])}</td>"
        f"<td><b>{esc(c['claim'])}</b><br><small>{esc(c['id'])}</small></td>"
        f"<td>{esc(c['paper_figure'])}</td><td>{compares_on(c)}{esc(c['measured'])}{beside(c)}</td>"
        f"<td>{delta(c)}{'<br><small>' + esc(c['delta_source']) + '</small>' if c.get('delta_source') else ''}</td>"
        + verdict_cell(c["verdict"], c["note"])
        + (f"<td>{esc(c.get('measured_held_out') or '')}</td>" + verdict_cell(c.get("verdict_held_out"), c.get("note_held_out") or "")
           if two_way else "") + "</tr>"
        for c in data["claims"])
    readings = (f"<p><b>Two readings of Figure 2.</b> Each probe row is judged twice, by the same rule and δ, each "
                f"reading with its own interval and verdict. <i>verdict</i>: {esc(two_way[0]['reading'])}. "
                f"<i>held-out verdict</i>: {esc(two_way[0]['reading_held_out'])}. The first is the reading that "
                "matches the paper's protocol; the second is stricter. Each row names the measure both verdicts compare "
                "on: the r1k authors' ALP measure where this run read it, the measure their released numbers and δ are "
                "on; revlib's own response-only readings are shown beside, each with its verdict (no number was "
                "released on revlib's measure, so those verdicts borrow the row's δ as the scale).</p>") if two_way else ""
    held_heads = "<th>held out: this run, with 95% interval</th><th>held-out verdict</th>" if two_way else ""
    learned = "".join(f"<tr><td>{esc(k)}</td><td>{esc(_value(v))}</td></tr>" for k, v in data["learned"].items())
    gates = data["learned"].get("failed_gates") or []
    gates_html = ("<p style='background:#f8d7d7'><b>Learning gates that failed.</b> The run went on past them "
                  "(require_learning: false), so the stages after them ran on these models:</p><ul>"
                  + "".join(f"<li>{esc(g)}</li>" for g in gates) + "</ul>") if gates else ""
    missing = "".join(f"<li>{esc(t)}</li>" for p, t in _NOT_RUN.items() if p not in data["covered"])
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    bench = data.get("benchmarks") or []
    models = list(dict.fromkeys(m for b in bench for m in b["accuracy"]))
    bench_rows = "".join(
        f"<tr><td>{esc(b['name'])}<br><small>{esc(b.get('what', ''))}</small></td><td>{b['n']}</td>"
        f"<td>{'in distribution' if b['in_distribution'] else 'outside both training sets'}</td><td>{pct(b['chance'])}</td>"
        f"<td>{'-' if b['in_distribution'] else ('alive' if b.get('alive') else 'inert (not counted)')}</td>"
        + "".join(f"<td>{pct(b['accuracy'].get(m))}</td>" for m in models) + "</tr>" for b in bench)
    bench_html = (f"<h2>Benchmarks</h2><p>Tables 1 and 2 are read out on the benchmarks outside both training sets "
                  f"(the role of AIME24, MATH500 and GPQA); one counts only when some model scores at least "
                  f"{100 * ALIVE_MARGIN:.0f} points above chance (always answering the commonest gold answer). T_f and "
                  "T_r are the in-distribution tables.</p><table><tr><th>benchmark</th><th>n</th><th>kind</th><th>chance</th><th>alive</th>"
                  + "".join(f"<th>{esc(m)}</th>" for m in models) + f"</tr>{bench_rows}</table>") if bench else ""
    tr = data.get("transfer") or []
    tr_html = ("<h2>Cross-direction transfer</h2><p>Each one-direction model on its own direction's questions and on "
               "the other direction's.</p><table><tr><th>model</th><th>where</th><th>own direction</th><th>other direction</th></tr>"
               + "".join(f"<tr><td>{esc(t['model'])}</td><td>{esc(t['benchmark'])}</td>"
                         f"<td>{pct(t['own_direction'])} (n={t['n_own']})</td><td>{pct(t['other_direction'])} (n={t['n_other']})</td></tr>"
                         for t in tr) + "</table>") if tr else ""
    body = f"""<p><b>Verdict rule.</b> {esc(data['rule'])}</p>
<h2>Claims</h2>
{readings}
<table><tr><th>paper</th><th>claim</th><th>paper's figure and number</th><th>this run, with 95% interval</th><th>δ and its source</th><th>verdict</th>{held_heads}</tr>{rows}</table>
{('<p>Not covered by this run:</p><ul>' + missing + '</ul>') if missing else ''}
{bench_html}
{tr_html}
<h2>Did the models learn?</h2>
{gates_html}
<table><tr><th>measure</th><th>value</th></tr>{learned}</table>
<p><a href="index.html">all reports</a></p>"""
    return pages.page(f"Findings: {data['experiment']}", body)
