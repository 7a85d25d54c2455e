"""Notebook 01: where forward examples come from, who writes the reverse ones, and the set sizes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from revlib.params.common import ExistingPath, ResolvedPath, Strict, check_task


class SyntheticSource(Strict):
    kind: Literal["synthetic"] = "synthetic"
    task: str = Field("arith", description="a registered task family (revlib.tasks.REGISTRY)")
    knobs: dict[str, Any] = Field(default_factory=dict, description="the task family's knobs")

    @model_validator(mode="after")
    def _known_task(self):
        check_task(self.task, self.knobs)
        return self


class S1KSource(Strict):
    kind: Literal["s1k"]
    dataset: str = Field("simplescaling/s1K-1.1", description="Hub dataset id (s1K or s1K-1.1)")
    path: ExistingPath | None = Field(None, description="local parquet/JSONL with the s1K schema instead of the Hub")
    trace: Literal["deepseek", "gemini"] = Field("deepseek", description="which reasoning trace is y_f")
    split: str = "train"


class R1KSource(Strict):
    kind: Literal["r1k"]
    dataset: str | None = Field(None, description="Hub dataset id in the r1k published format")
    path: ExistingPath | None = Field(None, description="local parquet/JSONL in the r1k published format")
    split: str = "train"

    @model_validator(mode="after")
    def _one_location(self):
        if (self.dataset is None) == (self.path is None):
            raise ValueError("r1k source: give exactly one of 'dataset' (Hub id) or 'path' (local file)")
        return self


Source = Annotated[SyntheticSource | S1KSource | R1KSource, Field(discriminator="kind")]


class OracleTeacher(Strict):
    kind: Literal["oracle"] = "oracle"


class ApiTeacher(Strict):
    kind: Literal["api"]
    base_url: str = Field(pattern=r"^https?://[^\s/]+", description="OpenAI-compatible endpoint, e.g. https://api.deepseek.com/v1")
    model: str = Field(min_length=1, description="model name at that endpoint, e.g. deepseek-reasoner")
    api_key_env: str | None = Field(
        "DEEPSEEK_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="NAME of the environment variable holding the key (never the key); null for a keyless local server")
    concurrency: int = Field(8, ge=1, description="requests in flight at once")
    timeout_s: float = Field(600.0, gt=0, description="total deadline of one request (connect, wait and the whole reply)")
    max_retries: int = Field(6, ge=0, description="retries on 429, 5xx, timeouts and malformed replies")
    backoff_s: float = Field(2.0, ge=0, description="first retry delay; doubles each retry (Retry-After wins)")
    max_backoff_s: float = Field(120.0, ge=0, description="cap on one retry delay")
    max_tokens: int = Field(16384, ge=1)
    temperature: float = Field(0.6, ge=0)
    budget_requests: int | None = Field(None, ge=0, description="stop cleanly after this many paid requests")
    budget_tokens: int | None = Field(None, ge=0, description="stop cleanly after this many paid tokens")
    cache_dir: ResolvedPath | None = Field(None, description="response cache; default <output_dir>/<experiment>/teacher_cache")


class HFTeacher(Strict):
    kind: Literal["hf"]
    model: str = Field(min_length=1, description="Hub id or local folder of the teacher model")
    batch_size: int = Field(8, ge=1)
    max_new_tokens: int = Field(4096, ge=1)
    temperature: float = Field(0.6, ge=0)
    engine: Literal["auto", "hf", "vllm"] = Field("auto", description="auto: vLLM when installed, else transformers generate")
    seed: int = Field(0, ge=0, description="sampling seed")
    cache_dir: ResolvedPath | None = Field(None, description="response cache; default <output_dir>/<experiment>/teacher_cache")


Teacher = Annotated[OracleTeacher | ApiTeacher | HFTeacher, Field(discriminator="kind")]


class DataParams(Strict):
    source: Source = SyntheticSource()
    teacher: Teacher = OracleTeacher()
    n_train: int = Field(200, ge=2, description="forward training examples (each gets a reverse twin)")
    n_test: int = Field(50, ge=1, description="held-out forward test examples (and their reverse twins)")
    probe_train: int = Field(50, ge=1, description="forward probe-training examples (paper: 50)")
    probe_test: int = Field(50, ge=1, description="forward test probes (paper: 50)")
    probe_file: ExistingPath | None = Field(
        None, description="r1k-format file (parquet/JSONL) whose twins are the probe sets instead of sampled ones")
    probe_from_train: bool = Field(
        False, description="draw probe_forward/probe_reverse from the training twins (the paper's in-distribution probes)")
    min_reasoning_chars: int = Field(1, ge=1, description="reject chains of thought shorter than this")
    max_reasoning_chars: int = Field(200_000, ge=1, description="reject chains of thought longer than this")
    free_text_check: Literal["contains", "judge", "skip"] = Field(
        "contains", description="answers math-verify cannot match: gold contained in answer, an LLM judge, or no check")

    @model_validator(mode="after")
    def _consistent(self):
        if self.free_text_check == "judge" and self.teacher.kind == "oracle":
            raise ValueError("free_text_check 'judge' needs a model teacher (api or hf), not the oracle")
        if self.min_reasoning_chars > self.max_reasoning_chars:
            raise ValueError("min_reasoning_chars must not exceed max_reasoning_chars")
        if self.source.kind == "r1k" and self.teacher.kind != "oracle":
            raise ValueError("an r1k source already holds its reverse twins; use teacher {kind: oracle} with it")
        if self.source.kind == "synthetic" and self.probe_file is not None:
            raise ValueError("probe_file holds r1k-format real data; it cannot be the probe set of a synthetic task")
        return self

    def group_sizes(self) -> dict[str, int]:
        """How many forward examples each disjoint group draws from the source (held-out groups first)."""
        sizes = {"test": self.n_test, "probe_test": self.probe_test}
        if not self.probe_from_train and self.probe_file is None:
            sizes["probe"] = self.probe_train
        sizes["train"] = self.n_train
        return sizes
