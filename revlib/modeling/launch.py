"""The accelerate launcher: one training job in `num_processes` processes, `accelerate launch --config_file configs/<name>.yaml`.

`revlib.modeling.train.sft/dpo` call `launch` when their params name an accelerate config; each launched
process runs `revlib.modeling.worker`, which runs the same in-process trainer (accelerate shards it).
The launcher writes the job file, streams the processes' output into `<out_dir>/launch/launch.log`, and
hands their trainer log entries (lines starting with LOG_PREFIX) to the caller as they happen.
It knows nothing of trainers: the worker writes the run's results where train.py reads them back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from revlib.core import io
from revlib.core.provenance import now

LAUNCHED_ENV = "REVLIB_LAUNCHED"  # set inside processes started by `accelerate launch`
MAIN_PORT_ENV = "REVLIB_MAIN_PROCESS_PORT"  # the rendezvous port the runner gives a cell beside others (--jobs)
LOG_PREFIX = "revlib.log "  # rank 0 prints each trainer log entry on such a line; the parent parses it
REPO_ROOT = io.REPO_ROOT
CONFIGS = REPO_ROOT / "configs"
WORKER = "revlib.modeling.worker"

OnLog = Callable[[dict[str, Any]], None]


def launched_elsewhere(accelerate_config: str | None) -> bool:
    """Whether a job with this config must be launched (not already inside a launched process)."""
    return accelerate_config is not None and os.environ.get(LAUNCHED_ENV) != "1"


def gpus_asked(accelerate_config: str | None, num_processes: int) -> int:
    """GPUs a launch config asks for: its processes, when it is a GPU config (ddp, zero3); 0 otherwise."""
    if accelerate_config is None:
        return 0
    config = yaml.safe_load((CONFIGS / f"{accelerate_config}.yaml").read_text())
    on_gpus = config.get("distributed_type") in ("MULTI_GPU", "DEEPSPEED") and not config.get("use_cpu", False)
    return num_processes if on_gpus else 0


def visible_gpus() -> int:
    """CUDA devices this process sees (0 without CUDA)."""
    import torch  # here, not at the top: `revlib check` reads a plan's GPU demand, and only this needs torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def cuda_diagnosis() -> str:
    """Why no CUDA device is visible, as far as torch can say."""
    import torch  # see visible_gpus

    build = f"torch {torch.__version__}, " + (f"built for CUDA {torch.version.cuda}" if torch.version.cuda
                                               else "a CPU-only build")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return build + (f", CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else "")


def launch(kind: str, job: dict[str, Any], data: list, out_dir: Path, accelerate_config: str, num_processes: int,
           on_log: OnLog | None = None) -> None:
    """Run the job in `num_processes` processes through accelerate; raise if they fail.

    `job` is what the worker needs besides its data (base, params, seed, epochs...). The processes' output goes
    to `<out_dir>/launch/launch.log` line by line as it is written (a killed kernel leaves it behind); their
    trainer log entries reach `on_log`, or are printed, as they happen. If `on_log` raises (or the caller is
    interrupted), the processes are killed and the error propagates.
    """
    config_file = CONFIGS / f"{accelerate_config}.yaml"
    if not config_file.exists():
        raise FileNotFoundError(f"accelerate config {config_file} not found (from accelerate_config: {accelerate_config})")
    job_dir = Path(out_dir) / "launch"
    data_file = io.write_jsonl(job_dir / f"{kind}_data.jsonl", (d.model_dump(mode="json") for d in data))
    job_file = io.write_json(job_dir / "job.json", {"kind": kind, "data": str(data_file), "out_dir": str(out_dir), **job})
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
           "--num_processes", str(num_processes)]
    if os.environ.get(MAIN_PORT_ENV):  # cells side by side must not share accelerate's default port
        cmd += ["--main_process_port", os.environ[MAIN_PORT_ENV]]
    cmd += ["-m", WORKER, str(job_file)]
    env = {**os.environ, LAUNCHED_ENV: "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    show = on_log or print_progress(kind)
    log_path = job_dir / "launch.log"
    tail: list[str] = []
    with open(log_path, "a", encoding="utf-8", buffering=1) as log:
        log.write(f"=== {now()} {' '.join(cmd)}\n")
        proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1, start_new_session=True)
        try:
            for line in proc.stdout:
                log.write(line)
                tail = (tail + [line])[-60:]
                if line.startswith(LOG_PREFIX):
                    try:
                        entry = json.loads(line[len(LOG_PREFIX):])
                    except json.JSONDecodeError:  # another rank's output cut into the line: the log keeps it
                        continue
                    show(entry)
            returncode = proc.wait()
        except BaseException:
            _kill_group(proc)
            log.write(f"=== {now()} stopped by the caller; processes killed\n")
            raise
    if returncode != 0:
        raise RuntimeError(f"accelerate launch failed (exit {returncode}); log in {log_path}\n{''.join(tail)[-3000:]}")


def _kill_group(proc: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def print_progress(kind: str) -> OnLog:
    """One line per trainer log entry, flushed, so a notebook cell shows a launched run as it goes."""

    def show(entry: dict[str, Any]) -> None:
        step, total = entry.get("step"), entry.get("max_steps")
        parts = [f"[{kind}] step {step}" + (f"/{total}" if total else "")]
        for key in ("epoch", "loss", "rewards/margins", "learning_rate", "train_runtime"):
            if entry.get(key) is not None:
                value = entry[key]
                parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
        print("  ".join(parts), flush=True)

    return show


def print_log_line(entry: dict[str, Any]) -> None:
    """The worker's on_log: one LOG_PREFIX line per entry, for the launcher to parse."""
    sys.stdout.write(LOG_PREFIX + json.dumps(entry, default=float) + "\n")  # one write: lines stay whole in the pipe
    sys.stdout.flush()
