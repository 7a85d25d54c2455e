"""Executes the plan: one papermill run per matrix cell, each exported to HTML, with resume."""

from __future__ import annotations

import html
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from revlib.core import io, redact
from revlib.params import Experiment, dump
from revlib.lab import pages
from revlib.lab.kernel import IPCKernelManager
from revlib.lab.plan import NOTEBOOKS, Cell, plan
from revlib.lab.context import RUNNER_ENV
from revlib.core.provenance import environment, now
from revlib.lab.fingerprint import fingerprint, fingerprint_hash, fingerprint_parts, stale_reasons
from revlib.lab.manifest import live_status, read_manifest, write_manifest
from revlib.lab import gpu_split, previous_runs, run_lock


TEMPLATES = Path(__file__).parent / "nbconvert_templates"


class CellFailed(RuntimeError):
    def __init__(self, cell: Cell, reason: str):
        self.cell = cell
        super().__init__(f"{cell.key} failed: {reason}\n  its notebook, with the error: {cell.run_dir / (cell.stage + '.html')}")


def cell_state(exp: Experiment, cell: Cell) -> str:
    """'done' (skippable), 'stale' (done with other inputs), 'failed', 'running', 'interrupted' (its process
    is gone) or 'new'."""
    manifest = read_manifest(cell.run_dir)
    if not manifest:
        return "new"
    status = manifest.get("status")
    if status == "done":
        return "done" if manifest.get("fingerprint") == fingerprint(exp, cell) else "stale"
    return live_status(cell.run_dir, manifest)[0]


def describe_state(exp: Experiment, cell: Cell) -> str:
    """cell_state, with the reasons a stale cell would re-run (for `revlib check`)."""
    state = cell_state(exp, cell)
    return f"stale ({'; '.join(stale_reasons(exp, cell))})" if state == "stale" else state


def select(exp: Experiment, only: list[str] | None = None) -> list[Cell]:
    cells = plan(exp)
    if only:
        wanted = {s if s[:2].isdigit() else s for s in only}
        cells = [c for c in cells if c.stage in wanted or c.stage[:2] in wanted]
    return cells


def run(
    exp: Experiment,
    params_file: Path,
    only: list[str] | None = None,
    force: bool = False,
    on_event: Callable[[str, Cell, dict[str, Any]], None] | None = None,
    jobs: int = 1,
    fresh: bool = False,
    say: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every selected cell whose inputs changed, up to `jobs` at once (a cell starts once the cells it
    reads from have finished); after a failure no new cell starts, and the first failure is raised, named.

    The experiment is locked for the whole run (`run_lock.RunLocked` when another live run holds it). A cell's
    earlier run that is not resumed is moved aside whole (`previous_runs`), never deleted; `fresh` starts the
    selected cells from nothing even where an interrupted run with the same inputs could resume. On a GPU
    machine, cells running side by side get disjoint GPUs and their own rendezvous ports (`gpu_split`)."""
    redact.register_params(exp)
    with run_lock.hold(exp.run_root, say=say):
        return _run_locked(exp, params_file, only, force, on_event, jobs, fresh, say)


def _run_locked(exp: Experiment, params_file: Path, only: list[str] | None, force: bool,
                on_event: Callable[[str, Cell, dict[str, Any]], None] | None, jobs: int, fresh: bool,
                say: Callable[[str], None] | None) -> list[dict[str, Any]]:
    emit = on_event or (lambda *_: None)
    tell = say or (lambda _: None)
    pending = select(exp, only)
    selected = {(c.stage, c.name) for c in pending}
    finished: set[tuple[str, str]] = set()
    results: list[dict[str, Any]] = []
    failure: tuple[Cell, dict[str, Any]] | None = None
    running: dict[Future, Cell] = {}
    devices = gpu_split.Devices.for_plan(exp, pending, jobs)  # raises a clear error on a split that cannot fit
    held: dict[Future, gpu_split.Slot] = {}
    cwd, env = os.getcwd(), {k: os.environ.get(k) for k in (RUNNER_ENV, "OMP_NUM_THREADS")}
    os.environ[RUNNER_ENV] = "1"
    if jobs > 1 and env["OMP_NUM_THREADS"] is None:
        # kernels share the cores: one torch thread each beats oversubscription by far on a small machine
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    # papermill's per-call chdir is process-wide and not thread-safe: the kernels' directory is set once here
    os.chdir(NOTEBOOKS)
    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            while running or (pending and failure is None):
                for cell in list(pending):
                    if failure is not None or len(running) >= jobs:
                        break
                    if any(d in selected and d not in finished for d in cell.deps):
                        continue
                    state = cell_state(exp, cell)
                    if state == "done" and not force:
                        pending.remove(cell)
                        emit("skip", cell, {})
                        results.append({"cell": cell.key, "status": "skipped"})
                        finished.add((cell.stage, cell.name))
                        continue
                    slot = devices.take(cell)
                    if slot is None:  # its GPUs are busy with a running cell: it starts when they are free
                        continue
                    pending.remove(cell)
                    emit("start", cell, {"state": state})
                    fut = pool.submit(execute_cell, exp, params_file, cell, fresh=fresh, kernel_env=slot.env,
                                      on_set_aside=tell)
                    running[fut], held[fut] = cell, slot
                if not running:
                    # a cell's dependencies come before it in the plan, so the pass above started every cell it could
                    if pending and failure is None:
                        raise RuntimeError(f"cells wait on cells that cannot finish: {[c.key for c in pending]}")
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    cell = running.pop(fut)
                    devices.give_back(held.pop(fut))
                    info = fut.result()
                    results.append({"cell": cell.key, **info})
                    write_index(exp)
                    emit("end", cell, info)
                    if info["status"] == "done":
                        finished.add((cell.stage, cell.name))
                    elif failure is None:
                        failure = (cell, info)
    finally:
        os.chdir(cwd)
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    write_index(exp)
    if failure is not None:
        raise CellFailed(failure[0], failure[1].get("error", "unknown error"))
    return results


def execute_cell(exp: Experiment, params_file: Path, cell: Cell, fresh: bool = False,
                 kernel_env: dict[str, str] | None = None,
                 on_set_aside: Callable[[str], None] | None = None) -> dict[str, Any]:
    import papermill as pm

    parts = fingerprint_parts(exp, cell)
    fp = fingerprint_hash(parts)
    previous = read_manifest(cell.run_dir)
    resumable = (not fresh and bool(previous) and previous.get("status") in ("running", "failed")
                 and previous.get("fingerprint") == fp)
    if cell.run_dir.exists() and any(cell.run_dir.iterdir()) and not resumable:
        # artifacts made from other inputs (or a forced or fresh re-run) must not be resumed from, and are kept
        where = previous_runs.set_aside(exp.run_root, cell.stage, cell.name, cell.run_dir)
        if on_set_aside is not None:
            on_set_aside(f"{cell.key}: its earlier run ({(previous or {}).get('status', 'no manifest')}) moved to {where}")
    cell.run_dir.mkdir(parents=True, exist_ok=True)
    io.write_text(cell.run_dir / "params.yaml", dump(exp))
    start_s, start = time.time(), now()
    inputs = {
        "params_file": str(params_file),
        "notebook": str(cell.notebook),
        "notebook_sha256": io.sha256_file(cell.notebook),
        "upstream": {f"{s}/{n}": (read_manifest(exp.run_root / s / n) or {}).get("fingerprint") for s, n in cell.deps},
    }
    base = {"stage": cell.stage, "cell": cell.name, "values": cell.values, "fingerprint": fp,
            "fingerprint_parts": parts, "inputs": inputs,
            "start": start, "pid": os.getpid(), "host": socket.gethostname(), **environment(),
            **({"devices": kernel_env} if kernel_env else {})}
    write_manifest(cell.run_dir, {**base, "status": "running"})
    out_nb = cell.run_dir / f"{cell.stage}.ipynb"
    status, error = "done", None
    try:
        # the kernel starts in the process's directory, which run() sets to the notebooks' folder
        pm.execute_notebook(
            str(cell.notebook),
            str(out_nb),
            parameters={"params_file": str(params_file), "cell": cell.name, "run_dir": str(cell.run_dir)},
            progress_bar=False,
            kernel_name="python3",
            kernel_manager_class=IPCKernelManager.with_env(kernel_env or {}),
        )
    except Exception as err:  # papermill raises PapermillExecutionError with the cell's traceback
        status, error = "failed", redact.redact(_short_error(err))
    if out_nb.exists():
        _scrub(out_nb)
        try:
            export_html(out_nb, cell.run_dir / f"{cell.stage}.html", exp.show_code)
        except Exception as err:  # a report that fails to render must not hide the run's own result
            error = (error + "; " if error else "") + f"HTML export failed: {err}"
    wall = time.time() - start_s
    metrics_path = cell.run_dir / "metrics.json"
    metrics = io.read_json(metrics_path) if metrics_path.exists() and status == "done" else None
    if status == "done" and metrics is None:
        status, error = "failed", "the notebook finished without recording metrics.json"
    manifest = {**base, "status": status, "end": now(), "wall_time_s": round(wall, 2), "error": error,
                "outputs": sorted(p.name for p in cell.run_dir.iterdir() if not p.name.startswith("."))}
    write_manifest(cell.run_dir, manifest)
    return {"status": status, "wall_time_s": round(wall, 2), "error": error}


def _scrub(path: Path) -> None:
    """Mask secrets in a file written by another process (the executed notebook) before anything reads it."""
    raw = path.read_bytes()
    clean = redact.redact_bytes(raw)
    if clean != raw:
        path.write_bytes(clean)


def _short_error(err: Exception) -> str:
    ename = getattr(err, "ename", type(err).__name__)
    evalue = getattr(err, "evalue", str(err))
    return f"{ename}: {evalue}".strip()[:2000]


def export_html(notebook: Path, target: Path, show_code: bool = False) -> Path:
    """The executed notebook as an offline HTML report; its code cells start hidden unless `show_code`."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    exporter = HTMLExporter(template_name="revlib_offline", extra_template_basedirs=[str(TEMPLATES)])
    body, _ = exporter.from_notebook_node(nb, resources={"revlib_show_code": show_code})
    return io.write_text(target, body)


def write_index(exp: Experiment) -> Path:
    """outputs/<experiment>/index.html: every report with its status and wall time, and each stage's share."""
    rows, stage_time = [], {}
    for cell in plan(exp):
        m = read_manifest(cell.run_dir) or {}
        if m.get("status") == "running":
            status, last = live_status(cell.run_dir, m)
            m = {**m, "status": status, "error": m.get("error") or (f"process gone; last output: {last}" if last else None)}
        wall = m.get("wall_time_s")
        if wall is not None and m.get("status") == "done":
            stage_time[cell.stage] = stage_time.get(cell.stage, 0.0) + wall
        report = cell.run_dir / f"{cell.stage}.html"
        rel = report.relative_to(exp.run_root).as_posix()
        link = f'<a href="{html.escape(rel)}">{html.escape(cell.key)}</a>' if report.exists() else html.escape(cell.key)
        rows.append(
            f"<tr class='{m.get('status', 'new')}'><td>{link}</td><td>{m.get('status', 'not run')}</td>"
            f"<td>{'' if wall is None else f'{wall:.1f} s'}</td><td>{html.escape(str(m.get('end', '')))}</td>"
            f"<td>{html.escape((m.get('error') or '')[:300])}</td></tr>"
        )
    total = sum(stage_time.values())
    budget_s = exp.budget_minutes * 60 if exp.budget_minutes else None
    share_rows = "".join(
        f"<tr><td>{html.escape(s)}</td><td>{t:.1f} s</td><td>{100 * t / total:.0f}%</td>"
        f"<td>{'' if not budget_s else f'{100 * t / budget_s:.0f}%'}</td></tr>"
        for s, t in stage_time.items()
    ) if total else ""
    budget_line = (f"<p>Total {total / 60:.1f} min of a {exp.budget_minutes:g}-minute budget.</p>"
                   if budget_s else f"<p>Total {total / 60:.1f} min.</p>")
    headline = _headline_tables(exp)
    findings_link = _findings(exp)
    if (exp.run_root / "seeds.html").exists():  # written by `revlib seeds`
        findings_link += '<p><a href="seeds.html">Verdicts across seeds</a>: each claim\'s verdict per seed, flips marked.</p>'
    body = f"""<p>{html.escape(exp.description)}</p>
{findings_link}
<h2>Reports</h2><table><tr><th>notebook / cell</th><th>status</th><th>wall time</th><th>finished</th><th>error</th></tr>
{''.join(rows)}</table>
<h2>Time by stage</h2>{budget_line}<table><tr><th>stage</th><th>wall time</th><th>share of run</th><th>share of budget</th></tr>{share_rows}</table>
{headline}"""
    page = pages.page(exp.experiment, body, width=1100)
    return io.write_text(exp.run_root / "index.html", page)


def _findings(exp: Experiment) -> str:
    """Write the findings page and link it; a failure to compute it is shown, never fatal to the run."""
    from revlib.lab import findings

    try:
        page = findings.write(exp)
    except Exception as err:  # the stages' own results stay readable
        return f"<p class='failed'>Findings page could not be computed: {html.escape(redact.redact(repr(err)))}</p>"
    if page is None:
        return ""
    data = io.read_json(exp.run_root / "findings.json")
    summary = _count(c["verdict"] for c in data["claims"]) or "no claim tested yet"
    second = [c for c in data["claims"] if c.get("verdict_held_out")]
    line = f"Which paper claims this run reproduces: {summary}."
    if second:  # claims read two ways (the r1k probes: in sample, the authors' protocol, and held out) count both
        line = (f"Which paper claims this run reproduces, read where the paper reads them: {summary}. "
                f"The {len(second)} claims also read held out: {_count(c['verdict_held_out'] for c in second)}.")
    return f'<h2><a href="findings.html">Findings</a></h2><p>{html.escape(line)}</p>'


def _count(verdicts) -> str:
    counts: dict[str, int] = {}
    for v in verdicts:
        counts[v] = counts.get(v, 0) + 1
    return ", ".join(f"{n} {v}" for v, n in counts.items())


def _headline_tables(exp: Experiment) -> str:
    """Tables that stages publish as `headline_*.html` fragments in their run directories."""
    parts = []
    for cell in plan(exp):
        m = read_manifest(cell.run_dir) or {}
        if m.get("status") != "done":
            continue
        for frag in sorted(cell.run_dir.glob("headline_*.html")):
            parts.append(f"<h3>{html.escape(cell.key)}: {html.escape(frag.stem.removeprefix('headline_'))}</h3>"
                         + frag.read_text(encoding="utf-8"))
    return ("<h2>Headline results</h2>" + "".join(parts)) if parts else ""
