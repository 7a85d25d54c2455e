"""An embedded model's tokenizer reaches every loader exactly as it was trained: ours, trl's, lm-eval's."""

from __future__ import annotations

import random

import pytest

from revlib.modeling import models
from revlib.core import render
from revlib.tasks import get_task


@pytest.fixture(scope="module")
def whole_number_model(tmp_path_factory):
    """A micro Qwen2 model whose tokenizer keeps whole numbers as single tokens, saved like a shipped base."""
    task = get_task("arith", {"steps": 4, "min_value": 1, "max_value": 30})
    corpus = [render.DEFAULT_SYSTEM]
    for fwd in task.sample(0, 300):
        for r in (fwd, task.invert(fwd)):
            corpus.append(r.question + "\n" + render.assistant_content(r.reasoning, r.answer))
    tok = models.build_tokenizer(corpus, vocab_size=800, numbers="whole")
    path = tmp_path_factory.mktemp("whole_numbers")
    models.build_model("micro", tok, seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    texts = [r.question + " " + r.reasoning for r in task.sample(1, 200)]
    texts += [f"{random.Random(i).randint(-99, 999)} + {i} = {i * 7}" for i in range(100)]
    return path, tok, texts


def _ids(tok, texts):
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_whole_numbers_are_single_tokens(whole_number_model):
    _, tok, _ = whole_number_model
    assert len(tok.tokenize("(2) 13 - 7 = 6")) == len(tok.tokenize("(2) 1 - 7 = 6"))


def test_revlib_loader_round_trips(whole_number_model):
    path, tok, texts = whole_number_model
    loaded = models.load_tokenizer(path)
    assert _ids(loaded, texts) == _ids(tok, texts)
    assert loaded.apply_chat_template(render.prompt_messages("Start from 12."), tokenize=False, add_generation_prompt=True) \
        == tok.apply_chat_template(render.prompt_messages("Start from 12."), tokenize=False, add_generation_prompt=True)


def test_trl_trainer_tokenizes_as_trained(whole_number_model, tmp_path):
    """revlib.modeling.train hands trl the tokenizer revlib loaded; trl's processing class encodes identically."""
    from revlib.modeling import train
    from revlib.params.train import SFTParams
    from revlib.core.records import Record

    path, tok, texts = whole_number_model
    recs = [Record(id=f"r{i}", pair_id=f"p{i}", direction="forward", task="arith", question=t, reasoning="(1) 12 + 3 = 15",
                   answer="15", gold="15") for i, t in enumerate(texts[:8])]
    params = SFTParams(lora=None, epochs=1, batch_size=4, max_steps=1, max_length=256)
    trainer, rows, _ = train.sft_trainer(str(path), recs, tmp_path / "sft", params, seed=0, epochs=1, every=1)
    assert _ids(trainer.processing_class, texts) == _ids(tok, texts)
    row = rows[0]
    prompt, completion = render.tokenize_example(tok, recs[0].question, recs[0].reasoning, recs[0].answer)
    assert row["input_ids"] == prompt + completion


def test_lm_eval_model_tokenizes_as_trained(whole_number_model):
    from revlib.evaluation import harness
    from revlib.params.benchmarks import BenchmarkParams

    path, tok, texts = whole_number_model
    bp = BenchmarkParams(tasks=["synthetic_forward"], batch_size=4)
    ref = harness.ModelRef("base", "(base)", str(path), None, str(path))
    name, args = harness.model_args(ref, bp)
    lm = harness.language_model(name, args, bp)
    assert [lm.tok_encode(t) for t in texts] == _ids(tok, texts)
