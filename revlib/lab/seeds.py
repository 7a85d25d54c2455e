"""Verdicts across seeds: run one experiment's claims at several seeds and tabulate each claim's verdict per seed.

`revlib seeds params/demo.yaml --seeds 0 1 2` runs the experiment as it is for its own seed (outputs/<exp>/,
finished cells reused) and, for every other seed s, a copy named <exp>-seed<s> beside it with only `seed`
changed. The seed draws the data (problems, split, mixes, probe sets, task-world benchmarks) and seeds training
(SFT, DPO, per-step rollouts). A base model with `source: local` or `hub` is one published checkpoint and is
shared by every seed (the page says so); an embedded base (`source: embedded`) is pretrained again per seed.
The page `outputs/<exp>/seeds.html` (and seeds.json) is linked from the experiment's index.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from revlib.lab import findings, pages
from revlib.core import io
from revlib.params import Experiment, load

SEEDS_JSON = "seeds.json"
SEEDS_HTML = "seeds.html"


def seed_params(exp: Experiment, seed: int, folder: Path) -> Path:
    """`exp` at another seed as a params file of its own (paths resolved, so it runs from anywhere)."""
    raw = exp.model_dump(mode="json", exclude_unset=True, by_alias=True)
    raw |= {"experiment": f"{exp.experiment}-seed{seed}", "seed": seed, "output_dir": str(exp.output_dir)}
    raw["description"] = f"{exp.description} (seed {seed}: written by `revlib seeds`)".strip()
    path = Path(folder) / f"{exp.experiment}-seed{seed}.yaml"
    io.write_text(path, "# written by `revlib seeds`; edit the source params file instead\n" + yaml.safe_dump(raw, sort_keys=False))
    return path


def base_note(exp: Experiment) -> str:
    own = [m.name for m in exp.base_models if m.source == "embedded"]
    shared = [f"{m.name} ({m.path or m.source})" for m in exp.base_models if m.source != "embedded"]
    parts = []
    if shared:
        parts.append("shared by every seed: " + ", ".join(shared) + " is one published checkpoint (an embedded base "
                     "build takes about 15 minutes per seed on 2 cores, more than this sweep's budget)")
    if own:
        parts.append("pretrained again at each seed: " + ", ".join(own))
    return "; ".join(parts)


def sweep(params_file: Path, seeds: list[int], jobs: int = 1,
          run: Callable[[Experiment, Path], None] | None = None) -> Path:
    """Run every seed (finished cells are kept), then write the seeds page; returns its path."""
    from revlib.lab import runner

    exp = load(params_file)
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"--seeds must be distinct and at least one, got {seeds}")
    folder = exp.run_root / "seeds"
    runs: list[dict[str, Any]] = []
    for seed in seeds:
        path = Path(params_file).resolve() if seed == exp.seed else seed_params(exp, seed, folder)
        exp_s = load(path)
        t0 = time.time()
        status = "done"
        try:
            (run or (lambda e, p: runner.run(e, p, jobs=jobs)))(exp_s, path)
        except Exception as err:  # a failed seed is a row of the page, not the end of the sweep
            status = f"failed: {type(err).__name__}: {str(err)[:300]}"
            runner.write_index(exp_s)
        runs.append({"seed": seed, "experiment": exp_s.experiment, "params": str(path), "status": status,
                     "wall_s": round(time.time() - t0, 1), "cells_s": round(cells_seconds(exp_s), 1),
                     "run_root": str(exp_s.run_root)})
    return write(exp, runs)


def cells_seconds(exp: Experiment) -> float:
    """Sum of the wall times its finished cells recorded (what the run cost, even when this sweep reused it)."""
    from revlib.lab.plan import plan
    from revlib.lab.manifest import read_manifest

    total = 0.0
    for cell in plan(exp):
        m = read_manifest(cell.run_dir) or {}
        if m.get("status") == "done" and m.get("wall_time_s") is not None:
            total += m["wall_time_s"]
    return total


def collect(exp: Experiment, runs: list[dict[str, Any]]) -> dict[str, Any]:
    per_seed = []
    for r in runs:
        exp_s = load(r["params"])
        data = findings.collect(exp_s)
        per_seed.append({**r, "claims": {c["id"]: c for c in data["claims"]},
                         "benchmarks": [b for b in data["benchmarks"] if not b["in_distribution"]]})
    ids = list(dict.fromkeys(cid for s in per_seed for cid in s["claims"]))
    rows = []
    for cid in ids:
        got = {s["seed"]: s["claims"].get(cid) for s in per_seed}
        verdicts = {seed: (c["verdict"] if c else "not run") for seed, c in got.items()}
        distinct = sorted({v for v in verdicts.values() if v != "not run"})  # a seed that did not run is no flip
        first = next(c for c in got.values() if c)
        rows.append({"id": cid, "claim": first["claim"], "paper": first["paper"], "delta": first["delta"],
                     "verdicts": verdicts,
                     "effects": {seed: (None if not c or c["effect"] is None else c["effect"]) for seed, c in got.items()},
                     "intervals": {seed: (None if not c or c["interval"] is None else c["interval"]) for seed, c in got.items()},
                     "notes": {seed: (c["note"] if c else "") for seed, c in got.items()},
                     "not_run": [seed for seed, v in verdicts.items() if v == "not run"],
                     "across_seeds": distinct[0] if len(distinct) == 1 else "flips"})
    return {"experiment": exp.experiment, "seeds": [s["seed"] for s in per_seed], "base": base_note(exp),
            "varies": "each seed draws its own problems, split, mixes, probe and task-world benchmark sets, and seeds "
                      "its own SFT, DPO and per-step rollouts",
            "runs": [{k: v for k, v in s.items() if k not in ("claims",)} for s in per_seed], "claims": rows}


def write(exp: Experiment, runs: list[dict[str, Any]]) -> Path:
    data = collect(exp, runs)
    io.write_json(exp.run_root / SEEDS_JSON, data)
    page = io.write_text(exp.run_root / SEEDS_HTML, render(data, exp))
    from revlib.lab import runner

    runner.write_index(exp)  # links the page
    return page


def _rel(exp: Experiment, run_root: str) -> str:
    import os

    return Path(os.path.relpath(Path(run_root) / "findings.html", exp.run_root)).as_posix()


def render(data: dict[str, Any], exp: Experiment) -> str:
    colours = {"reproduced": "#d9f2d9", "not reproduced": "#f8d7d7", "inconclusive": "#f4f0d0", "flips": "#f9d9a8"}
    seeds = data["seeds"]

    def cell(row, seed):
        v, e, iv = row["verdicts"][seed], row["effects"][seed], row["intervals"][seed]
        num = "" if e is None else f"<br><small>E = {e:+.3g}" + ("" if iv is None else f" [{iv[0]:+.3g}, {iv[1]:+.3g}]") + "</small>"
        note = row["notes"][seed]
        return (f"<td style='background:{colours.get(v, '#fff')}'>{html.escape(v)}{num}"
                f"{'<br><small>' + html.escape(note[:160]) + '</small>' if note else ''}</td>")

    rows = "".join(
        f"<tr><td>{html.escape(r['paper'])}</td><td><b>{html.escape(r['claim'])}</b><br><small>{html.escape(r['id'])}</small></td>"
        f"<td>{'' if r['delta'] is None else r['delta']}</td>" + "".join(cell(r, s) for s in seeds)
        + f"<td style='background:{colours.get(r['across_seeds'], '#fff')}'><b>{html.escape(r['across_seeds'])}</b>"
        + (f"<br><small>not run at seed {', '.join(map(str, r['not_run']))}</small>" if r["not_run"] else "") + "</td></tr>"
        for r in data["claims"])
    runs = "".join(
        f"<tr><td>{r['seed']}</td><td><a href='{html.escape(_rel(exp, r['run_root']))}'>{html.escape(r['experiment'])}</a></td>"
        f"<td>{html.escape(r['status'])}</td><td>{r['wall_s'] / 60:.1f} min</td><td>{r['cells_s'] / 60:.1f} min</td><td>"
        + ", ".join(f"{html.escape(b['name'])}: {'alive' if b.get('alive') else 'inert'}" for b in r["benchmarks"])
        + "</td></tr>" for r in data["runs"])
    flips = sum(r["across_seeds"] == "flips" for r in data["claims"])
    body = f"""<p><b>What varies.</b> {html.escape(data['varies'])}. <b>Base model:</b> {html.escape(data['base'])}.</p>
<p><b>Rule.</b> Each seed's verdict is its own findings page's (the rule is on that page). A claim whose verdict is not
the same at every seed is marked <b>flips</b>: {flips} of {len(data['claims'])} claims flip.</p>
<table><tr><th>paper</th><th>claim</th><th>δ</th>{''.join(f'<th>seed {s}</th>' for s in seeds)}<th>across seeds</th></tr>{rows}</table>
<h2>Runs</h2><table><tr><th>seed</th><th>findings</th><th>status</th><th>this sweep's wall time (finished cells are reused)</th><th>cells' recorded wall time, summed</th><th>task-world benchmarks</th></tr>{runs}</table>
<p><a href="index.html">all reports</a></p>"""
    return pages.page(f"Verdicts across seeds: {data['experiment']}", body, width=1300)
