"""Notebook 05: benchmarks through lm-evaluation-harness."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from revlib.params.common import ExistingPath, Strict

BenchmarkName = Literal["synthetic_forward", "synthetic_reverse", "aime24", "math500", "gpqa_diamond"]
SYNTHETIC_TASKS = ("synthetic_forward", "synthetic_reverse")


class JudgeParams(Strict):
    """An OpenAI-compatible chat API asked only about answers math-verify cannot decide."""

    base_url: str = Field("https://api.openai.com/v1", pattern=r"^https?://[^\s/]+",
                          description="OpenAI-compatible API root (…/v1)")
    model: str = Field("gpt-4o-mini", min_length=1, description="the paper's judge")
    api_key_env: str = Field("OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                             description="name of the environment variable holding the key (the key itself is never in params)")
    timeout_s: float = Field(60.0, gt=0, description="total deadline of one request")
    max_retries: int = Field(4, ge=0, description="retries on 429, 5xx, timeouts and malformed replies (with backoff)")
    budget_requests: int | None = Field(None, ge=0, description="stop after this many paid requests; cached verdicts are free")


class WorldBenchmark(Strict):
    """A task-world benchmark outside both training sets (the role AIME, MATH500 and GPQA play for the paper):
    chains drawn with other knobs than the training data's, or a question neither direction was trained on."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="shown in the tables as world_<name>")
    knobs: dict[str, Any] = Field(default_factory=dict, description="over data.source.knobs (e.g. steps: 4)")
    query: Literal["both", "forward", "reverse", "middle"] = Field(
        "both", description="both: each chain asked forward and as its reverse twin (equal shares, so neither "
                            "direction's model is favoured); middle: the value after an inner step, given start and result")
    n: int = Field(200, ge=2, description="problems (for 'both': n/2 chains, each asked both ways)")
    what: str = Field("", description="what the benchmark measures (shown on the findings page)")


WORLD_PREFIX = "world_"
# Qwen2.5-Math's instruction: what a base or instruct model needs to answer MATH-style problems in a gradable form
INSTRUCTIONS = {"qwen-math": "Please reason step by step, and put your final answer within \\boxed{}."}


class BenchmarkParams(Strict):
    tasks: list[BenchmarkName] = Field(default_factory=lambda: ["synthetic_forward", "synthetic_reverse"], min_length=1,
                                       description="benchmarks to run; synthetic_* read the test sets of notebook 01")
    models: list[Literal["base", "sft", "dpo"]] = Field(default_factory=lambda: ["sft", "dpo"], min_length=1,
                                                        description="which models of the matrix to evaluate (final checkpoints)")
    backend: Literal["hf", "vllm"] = "hf"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="weights dtype for evaluation")
    device: str | None = Field(None, description="hf backend: cpu, cuda, cuda:0; empty: cuda when available")
    max_gen_toks: int = Field(256, ge=1, description="most tokens generated per response")
    temperature: float = Field(0.0, ge=0, description="0: greedy")
    samples: int = Field(1, ge=1, description="samples per problem; accuracy is averaged over them")
    batch_size: int = Field(16, ge=1)
    limit: int | None = Field(None, ge=1, description="problems per task (for quick checks)")
    local_paths: dict[BenchmarkName, ExistingPath] = Field(
        default_factory=dict, description="benchmark -> local JSONL copy in the Hub dataset's fields (replaces the Hub download)")
    # vLLM backend (data parallel); ignored by hf
    data_parallel_size: int = Field(1, ge=1)
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: int | None = Field(None, ge=16, description="vllm context length; empty: the model's")
    merge_adapter: bool = Field(False, description="merge LoRA into its base before evaluating (faster generation; "
                                                   "vllm then needs no max_lora_rank); default: pass the adapter as is")
    judge: JudgeParams | None = Field(None, description="optional LLM judge for undecided math answers")
    instruction: str | None = Field(None, min_length=1, description="appended to every math/AIME/GPQA question for the "
                                    "models in instruction_for: 'qwen-math' (Qwen2.5-Math's \\boxed{} instruction) or "
                                    "your own text; models fine-tuned on the s1 format get the bare problem")
    instruction_for: list[Literal["base", "sft", "dpo"]] = Field(
        default_factory=lambda: ["base"], description="which models get `instruction` (a base or instruct model needs it)")
    world: list[WorldBenchmark] = Field(default_factory=list, description="task-world benchmarks outside both training "
                                        "sets, built by 05 from the data source's task family; findings read Tables 1 "
                                        "and 2 out on them")

    def instruction_text(self, label: str) -> str | None:
        """The instruction model `label` (base, sft, dpo, ...) gets, or None for the bare problem; every DPO model
        (dpo_per_step, a named variant's dpo_<name>) gets DPO's."""
        kind = "dpo" if label.startswith("dpo_") else label
        if self.instruction is None or kind not in self.instruction_for:
            return None
        return INSTRUCTIONS.get(self.instruction, self.instruction)

    @property
    def all_tasks(self) -> list[str]:
        """`tasks` and then each world benchmark as world_<name>."""
        return list(self.tasks) + [WORLD_PREFIX + w.name for w in self.world]

    @model_validator(mode="after")
    def _consistent(self):
        local_synth = [t for t in self.local_paths if t in SYNTHETIC_TASKS]
        if local_synth:
            raise ValueError(f"local_paths: {local_synth} come from notebook 01's test sets and cannot be replaced here")
        unused = [t for t in self.local_paths if t not in self.tasks]
        if unused:
            raise ValueError(f"local_paths: {unused} are not among tasks {self.tasks}")
        for task, path in self.local_paths.items():
            if task in SYNTHETIC_TASKS:
                continue
            from revlib.core.benchmark_files import check_local_file

            bad = check_local_file(task, path)
            if bad:
                raise ValueError(f"local_paths.{task}: " + "; ".join(bad))
        names = [w.name for w in self.world]
        if len(set(names)) != len(names):
            raise ValueError(f"world: benchmark names must be unique, got {names}")
        if self.temperature == 0 and self.samples > 1:
            raise ValueError("samples > 1 with temperature 0 repeats one greedy answer; set a temperature > 0")
        return self
