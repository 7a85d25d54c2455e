"""The `revlib` command: run, check and inspect experiments."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from revlib import params as params_mod
from revlib.core import io, redact
from revlib.lab.manifest import live_status, read_manifest
from revlib.lab.plan import plan

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Fine-tune reasoners with inverse and negative data.")
console = Console(stderr=False)
err_console = Console(stderr=True)

EXIT_BAD_PARAMS = 2


def _load(params_file: Path) -> params_mod.Experiment:
    try:
        return params_mod.load(params_file)
    except params_mod.ParamsError as err:
        err_console.print(f"[bold red]Invalid params[/] {err.path}: {len(err.problems)} problem(s)")
        for p in err.problems:
            err_console.print(f"  - {p}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_PARAMS) from None


def _plan_table(exp: params_mod.Experiment, only: list[str] | None = None) -> Table:
    from revlib.lab.runner import describe_state, select

    table = Table(title=f"{exp.experiment}: plan", show_lines=False)
    for col in ("stage", "cell", "state", "writes to"):
        table.add_column(col)
    for cell in select(exp, only):
        table.add_row(cell.stage, cell.name, describe_state(exp, cell), str(cell.run_dir))
    return table


@app.command()
def check(params_file: Annotated[Path, typer.Argument(help="experiment YAML")]) -> None:
    """Validate a params file and print the expanded plan: which notebook runs for which cell, and where it writes."""
    exp = _load(params_file)
    console.print(_plan_table(exp))
    _say_hardware(exp)
    console.print(f"[green]OK[/] {params_file}: {len(plan(exp))} cells")


@app.command()
def preflight(params_file: Annotated[Path, typer.Argument(help="experiment YAML")]) -> None:
    """Check this machine against the plan before the first GPU-hour: GPU memory per training process (estimated),
    packages, the driver's CUDA against torch's, API keys (set or not, never their values), the Hub, disk.
    Exit 2 on anything that would stop the run here."""
    from revlib.lab import preflight as preflight_mod

    exp = _load(params_file)
    report = preflight_mod.check(exp, preflight_mod.probe(exp))
    for title, lines in report.sections:
        console.print(f"[bold]{title}[/]")
        for line in lines:
            console.print(f"  {redact.redact(line)}", markup=False, highlight=False, soft_wrap=True)
    if report.problems:
        err_console.print(f"[bold red]Preflight: {len(report.problems)} problem(s) would stop this run here[/]")
        for p in report.problems:
            err_console.print(f"  - {redact.redact(p)}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_PARAMS)
    console.print(f"[green]Preflight OK[/] {params_file}: this machine has what the plan asks for", soft_wrap=True)


def _say_hardware(exp: params_mod.Experiment) -> None:
    """What the plan asks of this machine: a GPU shortfall (a warning here; `run` refuses), settings revlib
    switches off, and the disk the checkpoints take."""
    from revlib.lab import hardware  # reads configs/ and, only when GPUs are asked for, torch's CUDA count

    missing = hardware.missing_gpus(exp)
    if missing:
        console.print(f"[bold yellow]Warning:[/] {missing}; `revlib run` refuses this plan here", soft_wrap=True)
    for line in hardware.gate_stops(exp):
        console.print(f"[yellow]Gate:[/] {line}", soft_wrap=True)
    for line in hardware.switched_off(exp):
        console.print(f"[yellow]Switched off:[/] {line}", soft_wrap=True)
    console.print("Disk estimate:")
    for line in hardware.disk_estimate(exp):
        console.print(f"  {line}", soft_wrap=True)
    from revlib.lab.previous_runs import kept_bytes

    count, size = kept_bytes(exp.run_root)
    if count:
        console.print(f"  previous runs kept under {exp.run_root / 'previous'}: {count}, {_size(size)} "
                      "(listed by `revlib status`; finished work is never deleted by revlib)", soft_wrap=True)


@app.command()
def run(
    params_file: Annotated[Path, typer.Argument(help="experiment YAML")],
    only: Annotated[Optional[list[str]], typer.Option("--only", "-o", help="run only these stages (e.g. 02_sft or 02)")] = None,
    force: Annotated[bool, typer.Option("--force", help="re-run cells even if their inputs have not changed "
                                        "(their finished runs are moved aside, never deleted)")] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="start the selected cells from nothing: an interrupted or failed "
                                        "run is moved aside instead of resumed (implies --force)")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan without running")] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1,
                                      help="cells run at once (a cell waits for the cells it reads); with more than one, "
                                           "each kernel gets cores/jobs torch threads unless OMP_NUM_THREADS is set")] = 1,
) -> None:
    """Execute the experiment's notebooks, one per matrix cell, and export each to HTML."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from revlib.lab.runner import CellFailed, run as run_plan, select, write_index

    from revlib.lab import gpu_split, hardware, run_lock

    exp = _load(params_file)
    if dry_run:
        console.print(_plan_table(exp, only))
        return
    missing = hardware.missing_gpus(exp)
    if missing:  # before any compute: an 8-GPU plan on a box without them would otherwise fail hours in, or run on CPU
        console.print(_plan_table(exp, only))
        err_console.print(f"[bold red]Refused:[/] {missing}. Nothing was run or written.", soft_wrap=True)
        raise typer.Exit(EXIT_BAD_PARAMS)
    cells = select(exp, only)
    t0 = time.time()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        overall = progress.add_task(f"{exp.experiment}", total=len(cells))

        def on_event(kind, cell, info):
            if kind == "skip":
                progress.console.print(f"  [dim]skip[/] {cell.key} (finished, inputs unchanged)")
                progress.advance(overall)
            elif kind == "start":
                progress.update(overall, description=f"{exp.experiment}: {cell.key}")
            elif kind == "end":
                mark = "[green]done[/]" if info["status"] == "done" else "[red]FAILED[/]"
                progress.console.print(f"  {mark} {cell.key} in {info['wall_time_s']:.1f} s")
                progress.advance(overall)

        def say(line: str) -> None:
            progress.console.print(f"  [yellow]{line}[/]", markup=True, highlight=False, soft_wrap=True)

        try:
            run_plan(exp, params_file.resolve(), only=only, force=force or fresh, on_event=on_event, jobs=jobs,
                     fresh=fresh, say=say)
        except (run_lock.RunLocked, gpu_split.SplitRefused) as err:
            err_console.print("[bold red]Refused:[/] ", end="")
            err_console.print(redact.redact(str(err)), markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_BAD_PARAMS) from None
        except CellFailed as err:
            write_index(exp)
            err_console.print("[bold red]Stopped:[/] ", end="")
            err_console.print(redact.redact(str(err)), markup=False, highlight=False, soft_wrap=True)
            err_console.print(f"Fix it and run the same command again; finished cells are kept. Index: {exp.run_root / 'index.html'}",
                              soft_wrap=True)
            raise typer.Exit(1) from None
    console.print(f"[green]Finished[/] in {(time.time() - t0) / 60:.1f} min. Report: {exp.run_root / 'index.html'}", soft_wrap=True)


@app.command()
def seeds(
    params_file: Annotated[Path, typer.Argument(help="experiment YAML")],
    seed: Annotated[Optional[list[int]], typer.Option("--seed", "-s", help="a seed to run (repeat; default 0 1 2)")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="cells run at once, as for `revlib run`")] = 1,
) -> None:
    """Run the experiment's claims at several seeds (own data split and training seed each) and write
    outputs/<experiment>/seeds.html: each claim's verdict per seed, flips marked."""
    from revlib.lab import seeds as seeds_mod

    exp = _load(params_file)
    chosen = seed or [0, 1, 2]
    t0 = time.time()
    try:
        page = seeds_mod.sweep(params_file, chosen, jobs=jobs)
    except ValueError as err:
        err_console.print(f"[bold red]Error:[/] {err}", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(f"[green]Finished[/] {exp.experiment} at seeds {chosen} in {(time.time() - t0) / 60:.1f} min. "
                  f"Verdicts across seeds: {page}", soft_wrap=True)


@app.command()
def status(run_root: Annotated[Path, typer.Argument(help="outputs/<experiment>")]) -> None:
    """Show every cell's status and wall time from the manifests under a run directory."""
    if not run_root.is_dir():
        err_console.print(f"[red]No run directory at {run_root}[/]")
        raise typer.Exit(1)
    table = Table(title=str(run_root))
    for col in ("stage", "cell", "status", "wall time", "end"):
        table.add_column(col, no_wrap=col in ("stage", "cell", "status"))
    table.add_column("error or last output", ratio=1)
    found = 0
    for manifest_path in sorted(run_root.glob("*/*/manifest.json")):
        m = read_manifest(manifest_path.parent) or {}
        found += 1
        wall = m.get("wall_time_s")
        status, last = live_status(manifest_path.parent, m)
        note = m.get("error") or (f"process gone; last output: {last}" if status == "interrupted" else "")
        table.add_row(manifest_path.parent.parent.name, manifest_path.parent.name, status,
                      "" if wall is None else f"{wall:.1f} s", str(m.get("end", "")), redact.redact(note or "")[:120])
    console.print(table if found else f"No cells have run under {run_root}")
    _say_previous(run_root)


def _say_previous(run_root: Path) -> None:
    """The runs set aside when a cell's inputs changed (or it was forced), with their size."""
    from revlib.lab.previous_runs import previous_runs

    kept = previous_runs(run_root)
    if not kept:
        return
    table = Table(title=f"previous runs, kept ({sum(r.size_bytes for r in kept) / 1e9:,.2f} GB)")
    for col in ("stage", "cell", "status", "fingerprint", "end", "size", "where"):
        table.add_column(col, no_wrap=col != "where")
    for r in kept:
        table.add_row(r.stage, r.cell, r.status, r.fingerprint[:12], r.end, _size(r.size_bytes), str(r.path))
    console.print(table)


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} B"


EVAL_BENCHMARKS = ("math500", "aime24", "gpqa_diamond")


def eval_params(model: str, benchmarks: list[str], local: dict[str, str], name: str, output_dir: Path,
                **settings) -> dict:
    """The params recipe `revlib eval` runs: the model recorded as is by 00, evaluated by 05 as 'base'.

    A LoRA adapter folder (adapter_config.json) is merged into its base first, into <run>/merged_model."""
    import json
    import re

    path = Path(model).expanduser()
    if path.is_dir() and (path / "adapter_config.json").exists():
        from revlib.modeling import train

        base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
        target = output_dir.resolve() / name / "merged_model"
        console.print(f"Merging adapter {path} into its base {base} -> {target}", soft_wrap=True)
        spec = {"name": "model", "source": "local", "path": train.merge_adapter(base, str(path.resolve()), target)}
    elif path.is_dir():
        spec = {"name": "model", "source": "local", "path": str(path.resolve())}
    elif path.is_file() and path.suffix == ".gguf":  # de-quantised once by 00, like any GGUF base
        spec = {"name": "model", "source": "gguf", "path": str(path.resolve()), "dtype": "float32"}
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", model):
        spec = {"name": "model", "source": "hub", "id": model}
    else:
        err_console.print(f"[red]{model}[/] is neither a model folder nor a Hub id (owner/name)", soft_wrap=True)
        raise typer.Exit(EXIT_BAD_PARAMS)
    bench = {"tasks": benchmarks, "models": ["base"],
             "local_paths": {k: str(Path(v).expanduser().resolve()) for k, v in local.items()},
             **{k: v for k, v in settings.items() if v is not None}}
    return {"experiment": name, "description": f"revlib eval {model}", "output_dir": str(output_dir.resolve()),
            "stages": ["00_base_model", "05_benchmarks"], "base_models": [spec], "benchmarks": bench}


@app.command(name="eval")
def eval_model(
    model: Annotated[str, typer.Argument(help="a local model folder, a LoRA adapter folder, a .gguf file, or a Hub id")],
    benchmarks: Annotated[list[str], typer.Option("--benchmarks", "-b", help=f"repeat: {', '.join(EVAL_BENCHMARKS)}")],
    local: Annotated[Optional[list[str]], typer.Option("--local", help="name=path: a local JSONL for a benchmark")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="experiment name (default: eval-<model folder or id>)")] = None,
    output_dir: Annotated[Path, typer.Option("--output-dir", help="run directories go under here")] = Path("outputs"),
    limit: Annotated[Optional[int], typer.Option("--limit", help="problems per benchmark (quick checks)")] = None,
    max_gen_toks: Annotated[Optional[int], typer.Option("--max-gen-toks", help="most tokens per response")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size")] = None,
    backend: Annotated[Optional[str], typer.Option("--backend", help="hf or vllm")] = None,
    instruction: Annotated[Optional[str], typer.Option("--instruction", help="appended to each question: 'qwen-math' "
                                                       "(Qwen2.5-Math's \\boxed{} instruction) or your own text; a base or "
                                                       "instruct model needs one, an s1-format model does not")] = None,
    force: Annotated[bool, typer.Option("--force", help="re-run even if finished")] = False,
) -> None:
    """Evaluate one model or adapter through notebook 05 and its lm-eval tasks: the same tables as an experiment.

    The params it runs are written to <output-dir>/<name>.yaml, so `revlib run` on that file repeats it."""
    import yaml

    wrong = [b for b in benchmarks if b not in EVAL_BENCHMARKS]
    pairs = {}
    for item in local or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            wrong.append(f"--local {item!r} (want name=path)")
        pairs[key] = value
    if wrong:
        err_console.print(f"[bold red]Invalid eval arguments[/]: {', '.join(wrong)}; benchmarks are "
                          f"{', '.join(EVAL_BENCHMARKS)} (synthetic_* need notebook 01: use a params file)", soft_wrap=True)
        raise typer.Exit(EXIT_BAD_PARAMS)
    name = name or "eval-" + io.slug(Path(model.rstrip("/")).name or model, "-").strip("-.")
    output_dir.mkdir(parents=True, exist_ok=True)
    raw = eval_params(model, benchmarks, pairs, name, output_dir, limit=limit, max_gen_toks=max_gen_toks,
                      batch_size=batch_size, backend=backend, instruction=instruction)
    params_file = output_dir.resolve() / f"{name}.yaml"
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    console.print(f"Params: {params_file}", soft_wrap=True)
    run(params_file, only=None, force=force, dry_run=False)
    exp = params_mod.load(params_file)
    console.print(f"Tables: {exp.run_root / '05_benchmarks' / 'model'}", soft_wrap=True)


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
