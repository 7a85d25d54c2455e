"""lm-evaluation-harness as the engine: our task definitions, the model arguments per backend, and the samples.

The tasks ship in revlib/lmeval_tasks (task YAML + utils.py) and are found through a TaskManager
include path. A local JSONL replaces a task's Hub dataset by overriding only its data source
(`dataset_path: json`, `data_files`) on the same YAML, so local and Hub copies share one definition.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from revlib.core import render
from revlib.params.benchmarks import SYNTHETIC_TASKS, WORLD_PREFIX, BenchmarkParams

if TYPE_CHECKING:  # train (trl, peft) is imported only when a LoRA adapter must be merged
    from revlib.modeling.train import Checkpoint

TASK_DIR = Path(__file__).resolve().parent / "lmeval_tasks"
PREFIX = "revlib_"
# notebook 01's set behind each synthetic task
SYNTHETIC_SETS = {"synthetic_forward": "test_forward", "synthetic_reverse": "test_reverse"}

log = logging.getLogger(__name__)


def lm_eval_name(task: str) -> str:
    return PREFIX + task


def task_manager():
    """A TaskManager that sees only revlib's tasks (indexing all of lm-eval's YAML takes seconds)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASK_DIR), include_defaults=False)


def task_config(task: str, local_path: str | Path | None = None, samples: int = 1, manager=None) -> dict[str, Any]:
    """The task's own YAML as a config dict, with its data source swapped for `local_path` when given."""
    from lm_eval.tasks._yaml_loader import load_yaml

    manager = manager or task_manager()
    entry = manager.task_index.get(lm_eval_name(task))
    if entry is None or entry.yaml_path is None:
        raise KeyError(f"no lm-eval task {lm_eval_name(task)!r} in {TASK_DIR}; have {sorted(manager.all_subtasks)}")
    cfg = load_yaml(entry.yaml_path, resolve_func=True)
    if local_path is not None:
        path = Path(local_path)
        if not path.is_file():
            raise FileNotFoundError(f"{task}: local data file not found: {path}")
        cfg["dataset_path"] = "json"
        cfg.pop("dataset_name", None)
        cfg["dataset_kwargs"] = {"data_files": {cfg["test_split"]: str(path.resolve())}}
    elif task in SYNTHETIC_TASKS:
        raise ValueError(f"{task} reads notebook 01's {SYNTHETIC_SETS[task]}.jsonl; pass its path")
    if samples > 1:  # keep every sample so the accuracy is averaged over them
        cfg["repeats"] = samples
        cfg["filter_list"] = [{"name": "samples", "filter": [{"function": "take_first_k", "k": samples}]}]
    return cfg


def task_configs(bp: BenchmarkParams, data_dir: Path | None, tasks: list[str] | None = None,
                 world_files: dict[str, Path] | None = None, instruction: str | None = None) -> list[dict[str, Any]]:
    """lm-eval configs of `tasks` (default: every task of `bp`); a world_<name> task is the synthetic task's
    definition on the file revlib.data.world wrote for it. `instruction` follows each real benchmark's question."""
    manager = task_manager()
    out = []
    for task in tasks if tasks is not None else bp.all_tasks:
        if task.startswith(WORLD_PREFIX):
            if not world_files or task not in world_files:
                raise ValueError(f"{task}: no benchmark file (revlib.data.world.write_all writes it in notebook 05)")
            cfg = task_config("synthetic_forward", world_files[task], bp.samples, manager)
            cfg["task"] = lm_eval_name(task)
            out.append(cfg)
            continue
        if task in SYNTHETIC_TASKS:
            if data_dir is None:
                raise ValueError(f"{task} needs notebook 01's run directory")
            local = Path(data_dir) / "sets" / f"{SYNTHETIC_SETS[task]}.jsonl"
        else:
            local = bp.local_paths.get(task)
        cfg = task_config(task, local, bp.samples, manager)
        if instruction and task not in SYNTHETIC_TASKS:
            cfg["doc_to_text"] = with_instruction(instruction)
        out.append(cfg)
    return out


def with_instruction(instruction: str):
    """lm-eval's doc_to_text for a question followed by an instruction on its own paragraph."""
    def doc_to_text(doc: dict[str, Any]) -> str:
        return f"{doc['question']}\n\n{instruction}"
    return doc_to_text


@dataclass(frozen=True)
class ModelRef:
    """One model to evaluate: a base folder (or Hub id) and, for LoRA, an adapter folder."""

    label: str  # shown in the tables, e.g. "sft", "dpo"
    train_set: str  # "forward", "reverse", "mix", ... ("-" for the base model)
    pretrained: str
    adapter: str | None = None
    tokenizer: str | None = None

    @classmethod
    def from_checkpoint(cls, label: str, train_set: str, ckpt: Checkpoint) -> "ModelRef":
        """From revlib.modeling.train's Checkpoint: LoRA applies `adapter` to `base`; full fine-tuning saved the model in `path`."""
        path = Path(ckpt.path)
        tok = str(path) if (path / "tokenizer_config.json").exists() else str(ckpt.base)
        if ckpt.adapter:
            return cls(label, train_set, str(ckpt.base), str(ckpt.adapter), tokenizer=tok)
        weights = path if (path / "config.json").exists() else Path(str(ckpt.base))
        return cls(label, train_set, str(weights), None, tokenizer=tok)


def merge_adapter(ref: ModelRef, out_dir: Path) -> ModelRef:
    """Fold a LoRA adapter into its base and save it, for engines that should not serve adapters."""
    from revlib.modeling import train

    target = train.merge_adapter(ref.pretrained, ref.adapter, Path(out_dir) / "merged")
    return ModelRef(ref.label, ref.train_set, target, None, target)


def model_args(ref: ModelRef, bp: BenchmarkParams, work_dir: Path | None = None) -> tuple[str, dict[str, Any]]:
    """(lm-eval model type, its arguments) for the configured backend."""
    if ref.adapter and bp.merge_adapter:
        ref = merge_adapter(ref, work_dir or Path(ref.adapter).parent)
    if bp.backend == "hf":
        import torch

        args: dict[str, Any] = {"pretrained": ref.pretrained, "tokenizer": ref.tokenizer or ref.pretrained,
                                "dtype": bp.dtype,
                                "device": bp.device or ("cuda" if torch.cuda.is_available() else "cpu")}
        if ref.adapter:
            args["peft"] = ref.adapter
        return "hf", args
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise ModuleNotFoundError("backend 'vllm' needs the vllm package, which is not installed; use backend: hf")
    args = {"pretrained": ref.pretrained, "tokenizer": ref.tokenizer or ref.pretrained, "dtype": bp.dtype,
            "data_parallel_size": bp.data_parallel_size, "tensor_parallel_size": bp.tensor_parallel_size,
            "gpu_memory_utilization": bp.gpu_memory_utilization, "batch_size": "auto"}
    if bp.max_model_len:
        args["max_model_len"] = bp.max_model_len
    if ref.adapter:
        args["lora_local_path"] = ref.adapter
        from revlib.modeling import rollouts

        args["max_lora_rank"] = rollouts.vllm_lora_rank(rollouts.adapter_rank(ref.adapter))
    return "vllm", args


def gen_kwargs(bp: BenchmarkParams) -> dict[str, Any]:
    out: dict[str, Any] = {"max_gen_toks": bp.max_gen_toks, "do_sample": bp.temperature > 0}
    if bp.temperature > 0:
        out["temperature"] = bp.temperature
    return out


@dataclass
class ModelEval:
    ref: ModelRef
    lm_eval_acc: dict[str, float]  # lm-eval's own aggregate per task (from the tasks' process_results)
    samples: dict[str, list[dict[str, Any]]]  # lm-eval's logged samples per task (doc, resps, ...)
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)


def language_model(model: str, args: dict[str, Any], bp: BenchmarkParams) -> Any:
    """The lm-eval model to run: for the hf backend an HFLM holding revlib's tokenizer, else the backend name.

    lm-eval would load the tokenizer through AutoTokenizer, which rebuilds an embedded model's tokenizer
    as Qwen2's (digits split one by one); revlib's loader keeps it exactly as trained.
    """
    if model != "hf":
        return model
    from lm_eval.models.huggingface import HFLM

    from revlib.modeling.models import load_tokenizer

    return HFLM(**{**args, "tokenizer": load_tokenizer(args["tokenizer"]), "batch_size": bp.batch_size})


def evaluate(ref: ModelRef, bp: BenchmarkParams, data_dir: Path | None, seed: int = 0,
             work_dir: Path | None = None, tasks: list[str] | None = None,
             world_files: dict[str, Path] | None = None) -> ModelEval:
    """Run `tasks` (default: every configured task) on one model through lm_eval.simple_evaluate; the model's
    label decides whether the real benchmarks get `bp.instruction`."""
    from lm_eval import simple_evaluate

    model, args = model_args(ref, bp, work_dir)
    t0 = time.time()
    lm = language_model(model, args, bp)
    out = simple_evaluate(
        model=lm, model_args=args if lm is model else None, tasks=task_configs(bp, data_dir, tasks, world_files, bp.instruction_text(ref.label)),
        task_manager=task_manager(),
        batch_size=bp.batch_size if bp.backend == "hf" else "auto", limit=bp.limit, log_samples=True,
        apply_chat_template=True, system_instruction=render.DEFAULT_SYSTEM, gen_kwargs=gen_kwargs(bp),
        bootstrap_iters=0, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
    )
    seconds = time.time() - t0
    accs = {}
    for name, res in out["results"].items():
        task = name.removeprefix(PREFIX)
        acc = next((v for k, v in res.items() if k.startswith("acc,")), None)
        accs[task] = acc
    samples = {name.removeprefix(PREFIX): rows for name, rows in out["samples"].items()}
    return ModelEval(ref, accs, samples, seconds, {"model": model, "model_args": args, "gen_kwargs": gen_kwargs(bp)})


def ref_dict(ref: ModelRef) -> dict[str, Any]:
    return asdict(ref)
