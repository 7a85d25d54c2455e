"""Base models: the embedded task-world model, or a Hub id / local checkpoint."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from revlib.core import gguf_file
from revlib.params.common import ExistingPath, ResolvedPath, Strict

# Size presets. The qwen2.5-* presets have the real shapes, for random-initialised GPU checks.
PRESETS: dict[str, dict[str, Any]] = {
    "micro": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1),
    "tiny": dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    "small": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2),
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
}


class Pretrain(Strict):
    steps: int = Field(400, ge=0, description="optimizer steps of pretraining on primitive skills")
    batch_size: int = Field(32, ge=1, description="documents per step")
    lr: float = Field(3e-3, gt=0)
    corpus_size: int = Field(20000, ge=1, description="pretraining documents per task family")
    max_pack: int = Field(8, ge=1, description="primitive skills packed into one document (1..max_pack)")
    eval_size: int = Field(200, ge=1, description="held-out primitive problems for the accuracy table")
    numbers: Literal["whole", "digits"] = Field("whole", description="a frequent number is one token, or one token per digit")
    families: list[str] | None = Field(None, description="task families to pretrain on; null: those the experiment uses")
    layers: int | None = Field(None, ge=1, description="override the preset's number of layers")
    hidden_size: int | None = Field(None, ge=8, description="override the preset's width (intermediate: 3x)")
    grow_layers: int | None = Field(None, ge=2, description="after pretraining, deepen the model to this many layers by "
                                    "block expansion (models.expand_layers): the same function, more depth to train")

    @model_validator(mode="after")
    def _growth(self):
        if self.grow_layers is not None and self.layers is not None and self.grow_layers % self.layers:
            raise ValueError(f"grow_layers ({self.grow_layers}) must be a multiple of layers ({self.layers})")
        return self


class BaseModelSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="short name used in cell names")
    source: Literal["embedded", "hub", "local", "gguf"] = "embedded"
    preset: str = Field("tiny", description="size preset of an embedded model (PRESETS)")
    id: str | None = Field(None, description="Hub id, for source: hub")
    revision: str = Field("main", description="Hub revision, for source: hub")
    path: ExistingPath | None = Field(None, description="checkpoint folder, for source: local; the .gguf file, for "
                                      "source: gguf")
    package: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$",
                                description="for source: gguf, an installed package that ships the file (found, "
                                "never imported)")
    file: str | None = Field(None, pattern=r"^[^/\\]+\.gguf$", description="for source: gguf, the file's name inside `package`")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    pretrain: Pretrain = Pretrain()
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$",
                               description="for source: local, the checksum the folder's card must match; for source: "
                               "gguf, the file's own sha256")
    publish_to: ResolvedPath | None = Field(None, description="for source: embedded, also write the built model "
                                            "and its card here (a shipped base, like a Hub checkpoint)")

    @model_validator(mode="after")
    def _source_fields(self):
        if self.source == "hub" and not self.id:
            raise ValueError("source 'hub' needs 'id'")
        if self.source == "local" and self.path is None:
            raise ValueError("source 'local' needs 'path'")
        if self.sha256 and self.source not in ("local", "gguf"):
            raise ValueError("sha256 applies to source 'local' (a shipped base folder) or 'gguf' (the file)")
        if self.source == "gguf":
            self._check_gguf()
        elif self.package or self.file:
            raise ValueError("package and file apply to source 'gguf'")
        if self.publish_to and self.source != "embedded":
            raise ValueError("publish_to applies to source 'embedded'")
        if self.source == "embedded" and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        return self

    def _check_gguf(self) -> None:
        if (self.path is None) == (self.package is None):
            raise ValueError("source 'gguf' needs exactly one of 'path' (the .gguf file) or 'package' with 'file'")
        if self.package and not self.file:
            raise ValueError("source 'gguf' with 'package' needs 'file', the .gguf file's name inside it")
        try:
            gguf_file.verify(gguf_file.locate(self.path, self.package, self.file), self.sha256)
        except gguf_file.GGUFError as err:
            raise ValueError(str(err)) from None

    def gguf_target(self):
        return gguf_file.locate(self.path, self.package, self.file)
