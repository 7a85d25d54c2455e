"""The fast ALP scorer against the plain per-example reference, and adapter swapping on one base."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from revlib.modeling import probes
from revlib.core import render
from revlib.core.records import Record
from revlib.tasks import get_task


def _twins(n: int, seed: int = 0) -> tuple[list[Record], list[Record]]:
    fam = get_task("arith")
    fwd = fam.sample(seed, n)
    return fwd, [fam.invert(r) for r in fwd]


@pytest.fixture(scope="module")
def micro(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()


@pytest.fixture(scope="module")
def items(task_tokenizer):
    fwd, rev = _twins(6)
    return probes.build_items(task_tokenizer, fwd + rev, fwd + rev, max_response_tokens=1000)


def _assert_close(fast, ref, tol=1e-5):
    assert [f.id for f in fast] == [r.id for r in ref]
    for f, r in zip(fast, ref):
        for a, b in ((f.token_logps_chosen, r.token_logps_chosen), (f.token_logps_rejected, r.token_logps_rejected)):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, atol=tol, rtol=0)
        assert f.n_chosen == r.n_chosen and f.n_rejected == r.n_rejected


@pytest.mark.parametrize("share", ["always", "never"])
@pytest.mark.parametrize("budget,chunk", [(4096, 7), (150, 1024)])
def test_fast_scorer_matches_reference_per_token(micro, items, share, budget, chunk):
    ref = probes.reference_scores(micro, items)
    fast = probes.Scorer(token_budget=budget, logit_chunk=chunk, share_prompt=share).score(micro, items, keep_token_logps=True)
    _assert_close(fast, ref)
    assert all(np.isfinite([s.alp_chosen, s.alp_rejected, s.margin]).all() for s in fast)


def test_bf16_products_stay_close_to_float32_and_are_used(micro, items):
    """cpu_matmul bfloat16: the decoder layers' products in bf16 (autocast), the head and log-softmax in float32."""
    exact = probes.Scorer().score(micro, items)
    fast = probes.Scorer(cpu_matmul="bfloat16").score(micro, items)
    diffs = [abs(a.alp_chosen - b.alp_chosen) for a, b in zip(exact, fast)]
    assert max(diffs) < 2e-2 and 0 < max(diffs)  # close, and not float32's own numbers: bf16 did run
    assert abs(np.mean([a.margin for a in exact]) - np.mean([b.margin for b in fast])) < 5e-3
    assert probes.Scorer(cpu_matmul="auto").cpu_matmul in ("float32", "bfloat16")
    with pytest.raises(ValueError, match="cpu_matmul"):
        probes.Scorer(cpu_matmul="fp8")


def test_eager_attention_matches_too(tiny_model_dir, items):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="eager")
    ref = probes.reference_scores(model, items[:3])
    _assert_close(probes.Scorer(share_prompt="always").score(model, items[:3], keep_token_logps=True), ref)


def test_items_score_exactly_the_training_completion_tokens(task_tokenizer):
    fwd, rev = _twins(2)
    it = probes.build_items(task_tokenizer, [fwd[0]], [rev[0]], max_response_tokens=1000)[0]
    prompt, completion = render.tokenize_example(task_tokenizer, fwd[0].question, fwd[0].reasoning, fwd[0].answer)
    assert list(it.prompt_ids) == prompt and list(it.chosen_ids) == completion
    _, twin_completion = render.tokenize_example(task_tokenizer, fwd[0].question, rev[0].reasoning, rev[0].answer)
    assert list(it.rejected_ids) == twin_completion
    # the prompt (system + question) is never among the scored tokens, and the completion ends the turn
    assert task_tokenizer.decode(list(it.chosen_ids)).startswith(render.THINK)
    capped = probes.build_items(task_tokenizer, [fwd[0]], [rev[0]], max_response_tokens=5)[0]
    assert capped.chosen_ids == it.chosen_ids[:5] and len(capped.rejected_ids) == 5


def test_missing_twin_is_a_clear_error(task_tokenizer):
    fwd, _ = _twins(2)
    with pytest.raises(ValueError, match="no twin of the other direction"):
        probes.build_items(task_tokenizer, fwd, [], max_response_tokens=10)


def test_batches_respect_the_token_budget(items):
    rows = probes._rows(items, share=False)
    batches = list(probes._batches(rows, token_budget=300))
    assert sum(len(b) for b in batches) == len(rows) == 2 * len(items)
    for b in batches:
        lengths = [len(r.tokens) for r in b]
        assert lengths == sorted(lengths, reverse=True)
        assert len(b) == 1 or len(b) * lengths[0] <= 300


def test_real_long_text_records_score(task_tokenizer, micro):
    """r1k-style records: long free text, tokenized byte-level by the task-world tokenizer, capped."""
    text = "Let's think about GOATHERDS: G, O, A, T, H, E, R, D, S — ∑ résumé. " * 30
    f = Record(id="p1-f", pair_id="p1", direction="forward", task="s1k", question="Solve the clue (9)",
               reasoning=text, answer="GOATHERDS", gold="GOATHERDS")
    r = Record(id="p1-r", pair_id="p1", direction="reverse", task="s1k", question="What anagram?",
               reasoning=text[::-1], answer="GREAT DOSH", gold="GREAT DOSH")
    its = probes.build_items(task_tokenizer, [f, r], [f, r], max_response_tokens=64)
    assert all(len(i.chosen_ids) == 64 for i in its)
    _assert_close(probes.Scorer(token_budget=256).score(micro, its, keep_token_logps=True),
                  probes.reference_scores(micro, its))


@dataclass
class _Ckpt:
    path: Path
    base: str
    adapter: str | None


def test_adapters_swap_on_one_base(tiny_model_dir, items, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    ckpts = []
    for seed in (1, 2):
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        torch.manual_seed(seed)
        peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
        peft.save_pretrained(tmp_path / f"a{seed}")
        ckpts.append(_Ckpt(tmp_path / f"a{seed}", str(tiny_model_dir), str(tmp_path / f"a{seed}")))
    bank, scorer = probes.ModelBank(), probes.Scorer(share_prompt="always")
    got = {}
    for ck in [_Ckpt(Path(tiny_model_dir), str(tiny_model_dir), None), *ckpts]:
        with bank.use(ck) as model:
            got[str(ck.path)] = scorer.score(model, items[:3], keep_token_logps=True)
    assert bank.base_loads == 1 and bank.adapter_loads == 2
    for ck in ckpts:  # each swapped adapter scores exactly like a fresh load of that adapter
        fresh = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                                          ck.adapter).eval()
        _assert_close(got[str(ck.path)], probes.reference_scores(fresh, items[:3]))
    assert not np.allclose(got[str(ckpts[0].path)][0].token_logps_chosen, got[str(ckpts[1].path)][0].token_logps_chosen)
    # the base itself, served after adapters were loaded, is the plain base again
    with bank.use(_Ckpt(Path(tiny_model_dir), str(tiny_model_dir), None)) as model:
        again = scorer.score(model, items[:3], keep_token_logps=True)
    _assert_close(again, got[str(tiny_model_dir)], tol=1e-6)


R1K_PROBE = Path(__file__).resolve().parents[2] / "shared" / "data" / "r1k-probe-100.parquet"


@pytest.mark.skipif(not R1K_PROBE.exists(), reason="the r1k probe parquet is not in ../shared/data")
def test_real_r1k_probe_records(task_tokenizer, micro):
    """The paper's probe set, imported as notebook 01 imports it, scores with responses capped in tokens."""
    from revlib.data import sources

    twins = sources.r1k_twins(sources.load_rows(None, R1K_PROBE), source=str(R1K_PROBE))[:2]
    records = [r for pair in twins for r in pair]
    its = probes.build_items(task_tokenizer, records, records, max_response_tokens=96)
    assert all(len(i.chosen_ids) == 96 and len(i.rejected_ids) == 96 for i in its)  # long real text, capped
    assert all(it.chosen_ids != it.rejected_ids for it in its)
    _assert_close(probes.Scorer(token_budget=1024).score(micro, its, keep_token_logps=True),
                  probes.reference_scores(micro, its))


@pytest.fixture(scope="module")
def two_layer(task_tokenizer):
    from revlib.modeling.models import build_model

    return build_model("tiny", task_tokenizer, seed=1).eval()  # 2 decoder layers


def test_extra_probes_are_another_questions_answer_and_y_plus_shuffled(task_tokenizer):
    fwd, rev = _twins(3)
    items = probes.build_items(task_tokenizer, fwd + rev, fwd + rev, max_response_tokens=1000, extras=True)
    by_id = {it.id: it for it in items}
    for it in items:
        extras = dict(it.extras)
        assert sorted(extras["shuffled"]) == sorted(it.chosen_ids) and extras["shuffled"] != it.chosen_ids
        donors = [o for o in items if o.direction == it.direction and o.pair_id != it.pair_id]
        assert any(extras["irrelevant"] == o.chosen_ids[: len(it.chosen_ids)] for o in donors)
    assert len(by_id) == 6


def test_lower_layers_scored_once_give_the_same_scores_and_notice_a_change(two_layer, task_tokenizer):
    fwd, rev = _twins(4)
    items = probes.build_items(task_tokenizer, fwd + rev, fwd + rev, max_response_tokens=1000, extras=True)
    scorer = probes.Scorer(token_budget=512)
    full = scorer.score(two_layer, items)
    cached = scorer.score(two_layer, items, frozen_below=1)
    with torch.no_grad():  # an upper-layer change (a LoRA checkpoint): the cached lower states still serve
        for p in two_layer.model.layers[1].parameters():
            p.add_(0.05 * torch.randn_like(p))
    upper = scorer.score(two_layer, items, frozen_below=1)
    upper_full = scorer.score(two_layer, items)
    with torch.no_grad():  # a lower-layer change: the fingerprint differs, so the cache is rebuilt
        for p in two_layer.model.layers[0].parameters():
            p.add_(0.05 * torch.randn_like(p))
    lower = scorer.score(two_layer, items, frozen_below=1)
    lower_full = scorer.score(two_layer, items)
    for a, b in ((full, cached), (upper_full, upper), (lower_full, lower)):
        for x, y in zip(a, b):
            assert x.alp_chosen == pytest.approx(y.alp_chosen, abs=1e-5)
            assert x.alp_extra("irrelevant") == pytest.approx(y.alp_extra("irrelevant"), abs=1e-5)
            assert x.alp_argmax == pytest.approx(y.alp_argmax, abs=1e-5)
    assert any(abs(x.alp_chosen - y.alp_chosen) > 1e-3 for x, y in zip(full, upper_full))  # the change was real
    for s in full:
        assert s.alp_argmax >= s.alp_chosen - 1e-6  # the most likely token is at least as likely as y+'s


# --- the r1k authors' ALP measure against their own loop ---

R1K = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "r1k-probe-100.parquet"


def their_format_prompt(row):
    """analysis/analyze_training_dynamics.py (16demi/ReasonAlign-analysis, MIT), verbatim."""
    return f"<|im_start|>system\nYou are a helpful assistant.\n<|im_end|>\n<|im_start|>user\n{row['question']}<|im_end|>\n<|im_start|>assistant\n"


def their_calculate_log_probs(model, tokenizer, prompt, completion, max_tokens=1000):
    """Their calculate_log_probs, literally (logging and the peak value left out): the reference the fast path
    must equal."""
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
        logits = model(full_ids).logits
    shift_logits = logits[:, prompt_ids.shape[1]-1:-1, :]
    shift_labels = full_ids[:, prompt_ids.shape[1]:]
    log_probs = []
    for i in range(shift_labels.shape[1]):
        logit = shift_logits[:, i, :]
        label = shift_labels[:, i]
        log_prob = torch.log_softmax(logit, dim=-1).gather(1, label.unsqueeze(-1)).item()
        log_probs.append(log_prob)
    return sum(log_probs) / len(log_probs) if log_probs else float('-inf')


def _r1k_rows(n: int) -> list[dict]:
    import pandas as pd

    if not R1K.exists():
        pytest.skip(f"{R1K} not present")
    return pd.read_parquet(R1K).iloc[list(range(n // 2)) + list(range(50, 50 + n - n // 2))].to_dict("records")


def test_the_authors_prompt_is_their_string():
    row = {"question": "What is 2+2?"}
    assert probes.authors_prompt(row["question"]) == their_format_prompt(row)
    assert "assistant.\n<|im_end|>" in probes.AUTHORS_PROMPT  # their "\n" before <|im_end|>, kept


@pytest.mark.parametrize("cap", [2, 40, 1000])
def test_authors_measure_equals_their_loop(micro, task_tokenizer, cap):
    rows = _r1k_rows(4)  # two `original` rows and two `flipped` (whose `question` still holds x_f)
    ours = probes.authors_scores(micro, task_tokenizer,
                                 [probes.AuthorsRow(str(i), r["question"], r["text"], r["worse-text"])
                                  for i, r in enumerate(rows)], cap, probes.Scorer(token_budget=3000, logit_chunk=50))
    assert len(ours) == len(rows)
    for s, row in zip(ours, rows):
        prompt = their_format_prompt(row)
        text = their_calculate_log_probs(micro, task_tokenizer, prompt, row["text"], max_tokens=cap)
        worse = their_calculate_log_probs(micro, task_tokenizer, prompt, row["worse-text"], max_tokens=cap)
        assert s.alp_chosen == pytest.approx(text, abs=1e-4) and s.alp_rejected == pytest.approx(worse, abs=1e-4)
        assert s.margin == pytest.approx(text - worse, abs=2e-4)  # their avg_diff
        assert s.n_chosen == min(cap, len(task_tokenizer.encode(row["text"]))) - 1  # cut, then the first token dropped


def test_rows_their_script_skips_are_left_out_with_why(micro, task_tokenizer):
    rows = [probes.AuthorsRow("ok", "q", "a longer completion here", "another completion"),
            probes.AuthorsRow("blank", "q", "   ", "another completion"),
            probes.AuthorsRow("one", "q", "a longer completion here", "a")]
    one = task_tokenizer.encode("a")
    assert len(one) == 1
    items, skipped = probes.authors_items(task_tokenizer, rows, 1000)
    assert [it.id for it in items] == ["ok"]
    assert "its text is empty" in skipped["blank"] and "its worse-text" in skipped["one"]
    text_only = probes.authors_scores(micro, task_tokenizer, [probes.AuthorsRow("t", "q", "some text here", None)])
    assert np.isfinite(text_only[0].alp_chosen) and text_only[0].n_rejected == 0 and np.isnan(text_only[0].alp_rejected)
    with pytest.raises(ValueError, match="cap must be >= 2"):
        probes.authors_items(task_tokenizer, rows, 1)
