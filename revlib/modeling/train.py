"""SFT and directional DPO through trl and peft (notebooks 02 and 03).

Both trainers get pre-tokenized data rendered by `revlib.core.render`, so training, probes and
evaluation see the same token sequences. Checkpoints follow an epoch schedule; each finished
checkpoint gets a `revlib_checkpoint.json` marker written last, so a checkpoint without one is a
save that was cut short. Re-running into the same `out_dir` resumes from the last marked checkpoint.

Where this departs from trl's defaults, and why:
- gradient checkpointing off unless asked (trl turns it on; it only costs time on small models);
- SFT rows are pre-truncated in tokens; batches are padding-free with flash-attention (on CPU/sdpa the
  block-diagonal mask costs more than the padding it saves, measured 1.6x slower);
- DPO scores the reference once before training (`precompute_ref_log_probs`) instead of every step;
- beta, lengths, epochs and max_steps always come from params, never from trl's defaults.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from revlib.core import io, render
from revlib.params.train import DPOParams, SFTParams
from revlib.core.records import PreferencePair, Record

MARKER = "revlib_checkpoint.json"
CHECKPOINTS = "checkpoints"
MERGED_SFT = "merged_sft"
LAUNCHED_ENV = "REVLIB_LAUNCHED"  # set inside processes started by `accelerate launch`
REPO_ROOT = io.REPO_ROOT
CONFIGS = REPO_ROOT / "configs"

OnLog = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Checkpoint:
    """One saved checkpoint: a full model folder, or a LoRA adapter folder applied to `base`."""

    path: Path
    epoch: float
    step: int
    base: str
    adapter: str | None

    def to_json(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "base": self.base, "adapter": self.adapter}


@dataclass
class TrainResult:
    checkpoints: list[Checkpoint]
    log_history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> Checkpoint:
        if not self.checkpoints:
            raise RuntimeError("training wrote no checkpoint")
        return self.checkpoints[-1]


# ---------------------------------------------------------------- data


def sft_rows(tokenizer: Any, records: list[Record], max_length: int) -> list[dict[str, list[int]]]:
    """input_ids + completion_mask per record; the completion is cut so the whole fits `max_length` tokens."""
    if not records:
        raise ValueError("no training records")
    rows = []
    for rec in records:
        prompt_ids, completion_ids = render.tokenize_example(tokenizer, rec.question, rec.reasoning, rec.answer)
        room = max_length - len(prompt_ids)
        if room < 1:
            raise ValueError(
                f"record {rec.id}: prompt is {len(prompt_ids)} tokens, no room for a response within "
                f"max_length={max_length}; raise sft.max_length"
            )
        completion_ids = completion_ids[:room]
        rows.append({"input_ids": prompt_ids + completion_ids,
                     "completion_mask": [0] * len(prompt_ids) + [1] * len(completion_ids)})
    return rows


def tokenize_messages(tokenizer: Any, prompt: list[dict[str, str]], completion: list[dict[str, str]],
                      open_end: bool = False) -> tuple[list[int], list[int]]:
    """(prompt ids with the generation header, completion ids) by the same split as render.tokenize_example.

    open_end: the completion's last message is left open (no end-of-turn token after it), for a response
    cut mid-way such as a per-step DPO rejected that ends at its critical step.
    """
    prompt_ids = render._ids(tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True))
    full_ids = render._ids(tokenizer.apply_chat_template(prompt + completion, tokenize=True,
                                                         **({"continue_final_message": True} if open_end else {})))
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError("chat template does not extend the prompt with the assistant turn")
    return prompt_ids, full_ids[len(prompt_ids):]


def dpo_rows(tokenizer: Any, pairs: list[PreferencePair], max_length: int, max_prompt_length: int) -> list[dict[str, list[int]]]:
    """prompt_ids / chosen_ids / rejected_ids per pair, truncated in tokens.

    The prompt is tokenized once and kept separate, so the trainer sees it once per sequence
    (the released paper code put it inside chosen and rejected as well). The prompt keeps its
    last `max_prompt_length` tokens (the generation header stays); responses are cut to the rest.
    """
    if not pairs:
        raise ValueError("no preference pairs")
    rows = []
    for pair in pairs:
        prompt_ids, chosen_ids = tokenize_messages(tokenizer, pair.prompt, pair.chosen)
        prompt_again, rejected_ids = tokenize_messages(tokenizer, pair.prompt, pair.rejected,
                                                       open_end=bool(pair.meta.get("open_rejected")))
        assert prompt_again == prompt_ids
        prompt_ids = prompt_ids[-max_prompt_length:]
        room = max_length - len(prompt_ids)
        rows.append({"prompt_ids": prompt_ids, "chosen_ids": chosen_ids[:room], "rejected_ids": rejected_ids[:room]})
    return rows


def _dataset(rows: list[dict], shared_dir: Path | None = None) -> Any:
    """The rows as a datasets.Dataset; in several processes, one on disk under `shared_dir` that every rank opens.

    Why on disk: trl caches the precomputed reference log-probs next to the dataset's file, written by
    rank 0 and read by the others; an in-memory dataset puts that file in each process's own temp dir.
    """
    from datasets import Dataset, load_from_disk

    if shared_dir is None or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dataset.from_list(rows)
    folder = Path(shared_dir) / f"rows-{io.sha256_text(json.dumps(rows))[:16]}"
    with _main_process_first():
        if not (folder / "dataset_info.json").exists():
            with io.atomic_dir(folder) as tmp:
                Dataset.from_list(rows).save_to_disk(str(tmp))
    return load_from_disk(str(folder))


# ---------------------------------------------------------------- checkpoints


def checkpoint_dir(out_dir: Path) -> Path:
    return Path(out_dir) / CHECKPOINTS


def load_checkpoints(out_dir: str | Path) -> list[Checkpoint]:
    """The finished checkpoints of a run directory, by epoch (unmarked, half-written ones are skipped)."""
    root = checkpoint_dir(Path(out_dir))
    found = []
    for marker in root.glob(f"checkpoint-*/{MARKER}"):
        meta = io.read_json(marker)
        found.append(Checkpoint(path=marker.parent, epoch=float(meta["epoch"]), step=int(meta["step"]),
                                base=meta["base"], adapter=meta.get("adapter")))
    return sorted(found, key=lambda c: (c.epoch, c.step))


def load_model_for(ckpt: Checkpoint, dtype: str = "auto", device: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) of a checkpoint; a LoRA adapter is merged into its base for fast scoring."""
    from revlib.modeling import models

    tokenizer = models.load_tokenizer(ckpt.path)
    if ckpt.adapter is None:
        return models.load_model(ckpt.path, dtype=dtype, device=device).eval(), tokenizer
    from peft import PeftModel

    base = models.load_model(ckpt.base, dtype=dtype)
    model = PeftModel.from_pretrained(base, ckpt.adapter).merge_and_unload()
    if device:
        model.to(device)
    return model.eval(), tokenizer


def _resume_point(ckpt_root: Path) -> str | None:
    """The last finished checkpoint; checkpoint folders without a marker (cut short) are removed."""
    if not ckpt_root.exists():
        return None
    finished = []
    for folder in ckpt_root.glob("checkpoint-*"):
        if (folder / MARKER).exists():
            finished.append(folder)
        elif _is_main_process():
            shutil.rmtree(folder, ignore_errors=True)
    if not finished:
        return None
    return str(max(finished, key=lambda p: int(p.name.split("-")[-1])))


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _callbacks(total_epochs: int, every: int, base: str, lora: bool, on_log: OnLog | None) -> list:
    from transformers import TrainerCallback

    class EpochSchedule(TrainerCallback):
        """Keep the epoch save only on the schedule (every N epochs, and always the last one); mark saves done.

        Each step is saved at most once: the last step of a run is both a step end and an epoch end, and
        trl would otherwise write the same checkpoint twice (a second full write of adapter and optimizer).
        """

        def __init__(self):
            self.saved_step = -1

        def on_epoch_end(self, args, state, control, **kwargs):
            epoch = int(round(state.epoch or 0))
            due = epoch % every == 0 or epoch >= total_epochs or state.global_step >= state.max_steps
            control.should_save = due and state.global_step != self.saved_step
            return control

        def on_step_end(self, args, state, control, **kwargs):
            # max_steps can end training inside an epoch: save there too, so a run always has a final checkpoint
            if state.global_step >= state.max_steps and not control.should_save:
                control.should_save = True
            return control

        def on_save(self, args, state, control, **kwargs):
            self.saved_step = state.global_step
            if state.is_world_process_zero:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                adapter = str(folder) if lora else None
                meta = Checkpoint(folder, round(float(state.epoch or 0), 4), state.global_step, base, adapter)
                io.write_json(folder / MARKER, meta.to_json())
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            if on_log and logs and state.is_world_process_zero:
                on_log({"step": state.global_step, "epoch": state.epoch, "max_steps": state.max_steps, **logs})
            return control

    return [EpochSchedule()]


# ---------------------------------------------------------------- shared trainer setup


def _model_kwargs(params: SFTParams | DPOParams) -> dict[str, Any]:
    import torch

    attn = params.attn_implementation
    if attn == "auto":
        attn = "sdpa"
        if torch.cuda.is_available():
            try:
                import flash_attn  # noqa: F401

                attn = "flash_attention_2"
            except ImportError:
                pass
    return {"dtype": torch.bfloat16 if params.bf16 else torch.float32, "attn_implementation": attn}


def _lora_config(params: SFTParams | DPOParams, base: str):
    from peft import LoraConfig

    lo = params.lora
    layers, targets = None, lo.target_modules
    if lo.top_layers:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(base))
        n = config.num_hidden_layers
        if lo.top_layers > n:
            raise ValueError(f"lora.top_layers {lo.top_layers} exceeds the {n} decoder layers of {base}")
        layers = list(range(n - lo.top_layers, n))
        if targets == "all-linear":  # peft takes layers_to_transform only with named modules
            targets = _decoder_linear_names(config)
    return LoraConfig(r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout, target_modules=targets,
                      layers_to_transform=layers, layers_pattern="layers" if layers else None, task_type="CAUSAL_LM")


def _decoder_linear_names(config: Any) -> list[str]:
    """Names of the linear layers inside the decoder layers (what peft's 'all-linear' targets), from the meta device."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    return sorted({name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
                   if isinstance(mod, torch.nn.Linear) and ".layers." in name})


def adapter_lowest_layer(adapter: str | Path | None) -> int:
    """The lowest decoder layer a LoRA adapter changes (0 when it changes every layer, or is not an adapter)."""
    config = Path(adapter) / "adapter_config.json" if adapter else None
    if config is None or not config.is_file():
        return 0
    layers = json.loads(config.read_text()).get("layers_to_transform")
    if isinstance(layers, int):
        layers = [layers]
    return min(layers) if layers else 0


def _common_args(params: SFTParams | DPOParams, out_dir: Path, seed: int, epochs: int) -> dict[str, Any]:
    import torch

    return dict(
        output_dir=str(checkpoint_dir(out_dir)),
        num_train_epochs=epochs,
        max_steps=params.max_steps,
        learning_rate=params.lr,
        lr_scheduler_type=params.scheduler,
        warmup_steps=params.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=params.weight_decay,
        per_device_train_batch_size=params.batch_size,
        gradient_accumulation_steps=params.grad_accum,
        gradient_checkpointing=params.gradient_checkpointing,
        bf16=params.bf16,
        fp16=False,
        save_strategy="epoch",
        save_total_limit=None,
        logging_strategy="steps",
        logging_steps=params.logging_steps,
        report_to=list(params.report_to) or "none",
        seed=seed,
        data_seed=seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=True,
        ddp_find_unused_parameters=False,
    )


def _resumed_epoch(resume: str | None) -> float:
    """The epoch a run resumes at (0 for a fresh run)."""
    if not resume:
        return 0.0
    return float(io.read_json(Path(resume) / MARKER)["epoch"])


def _finish(trainer: Any, out_dir: Path, train_output: Any, epoch_tokens: int, start_epoch: float = 0.0) -> TrainResult:
    """Write the trainer state and metrics into the run directory; read the checkpoints back.

    Throughput counts the tokens of the epochs trained in this call: a resumed run trains only the
    rest, and `train_runtime` is this call's time.
    """
    state = trainer.state
    metrics = dict(train_output.metrics)
    runtime = metrics.get("train_runtime") or 0.0
    tokens = round(epoch_tokens * max(float(state.epoch or 0) - start_epoch, 0.0))
    metrics["train_tokens"] = tokens
    metrics["resumed_from_epoch"] = start_epoch
    metrics["train_tokens_per_second"] = tokens / runtime if runtime else None
    if trainer.is_world_process_zero():
        with io.atomic_path(Path(out_dir) / "trainer_state.json") as tmp:
            state.save_to_json(str(tmp))
        io.write_json(Path(out_dir) / "train_metrics.json", metrics)
    return TrainResult(checkpoints=load_checkpoints(out_dir), log_history=list(state.log_history), metrics=metrics)


def _quiet(trainer: Any) -> Any:
    """Drop the per-log stdout printer (notebooks show curves instead)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def _free_inference_engines() -> None:
    """A vLLM engine left by rollouts in this process holds most of the GPU; training (here or in launched
    processes) needs it back."""
    from revlib.modeling import rollouts  # cheap: vLLM itself is imported only when an engine is made

    rollouts.free_engines()


def _launched_elsewhere(params: SFTParams | DPOParams) -> bool:
    return params.accelerate_config is not None and os.environ.get(LAUNCHED_ENV) != "1"


# ---------------------------------------------------------------- SFT


def sft(
    base: str,
    records: list[Record],
    out_dir: Path,
    params: SFTParams,
    seed: int = 0,
    epochs: int | None = None,
    save_every_epochs: int | None = None,
    on_log: OnLog | None = None,
) -> TrainResult:
    """Supervised fine-tuning on `records` (loss on the assistant response only).

    `base` is a model folder or Hub id. With LoRA, checkpoints are adapter folders for `base`.
    Re-running into the same `out_dir` resumes from its last finished checkpoint.
    """
    out_dir = Path(out_dir)
    epochs = epochs or params.epochs
    every = save_every_epochs or params.save_every_epochs
    _free_inference_engines()
    if _launched_elsewhere(params):
        return launch("sft", base, records, out_dir, params, seed, epochs, every, on_log)

    trainer, rows = sft_trainer(base, records, out_dir, params, seed, epochs, every, on_log)
    resume = _resume_point(checkpoint_dir(out_dir))
    output = trainer.train(resume_from_checkpoint=resume)
    return _finish(trainer, out_dir, output, sum(len(r["input_ids"]) for r in rows), _resumed_epoch(resume))


def sft_trainer(base: str, records: list[Record], out_dir: Path, params: SFTParams, seed: int, epochs: int,
                every: int, on_log: OnLog | None = None) -> tuple[Any, list[dict]]:
    """The configured SFTTrainer (not yet trained) and its tokenized rows."""
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    from revlib.modeling import models

    set_seed(seed)
    tokenizer = models.load_tokenizer(base)
    rows = sft_rows(tokenizer, records, params.max_length)
    model_kwargs = _model_kwargs(params)
    padding_free = params.padding_free
    if padding_free is None:
        padding_free = model_kwargs["attn_implementation"] == "flash_attention_2"
    config = SFTConfig(
        **_common_args(params, out_dir, seed, epochs),
        max_length=None if padding_free else params.max_length,  # rows are already cut in tokens
        padding_free=padding_free,
        completion_only_loss=True,
        model_init_kwargs=model_kwargs,
        **params.trainer,
    )
    trainer = SFTTrainer(
        model=str(base),
        args=config,
        train_dataset=_dataset(rows),
        processing_class=tokenizer,
        peft_config=_lora_config(params, base) if params.lora else None,
        callbacks=_callbacks(epochs, every, str(base), params.lora is not None, on_log),
    )
    return _quiet(trainer), rows


# ---------------------------------------------------------------- DPO


def merge_adapter(base: str, adapter: str, target: Path) -> str:
    """Merge a LoRA adapter into its base and save the result (atomically) as a new base model folder."""
    from peft import PeftModel

    from revlib.modeling import models

    target = Path(target)
    with _main_process_first():
        if not (target / "config.json").exists():
            model = models.load_model(base, dtype="auto")
            merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
            tokenizer = models.load_tokenizer(adapter if (Path(adapter) / "tokenizer_config.json").exists() else base)
            with io.atomic_dir(target) as tmp:
                merged.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
    return str(target)


def _main_process_first():
    """Rank 0 runs the block first, the other ranks after it finished (a real barrier, not a no-op).

    Inside `accelerate launch` no process group exists before the trainer builds one, so it is set
    up here; in a single process this is a plain block.
    """
    import contextlib

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return contextlib.nullcontext()
    from accelerate import PartialState

    return PartialState().main_process_first()


def dpo(
    base: str,
    pairs: list[PreferencePair],
    out_dir: Path,
    params: DPOParams,
    seed: int = 0,
    sft_adapter: str | None = None,
    epochs: int | None = None,
    save_every_epochs: int | None = None,
    on_log: OnLog | None = None,
) -> TrainResult:
    """DPO on preference pairs with the SFT model as the reference.

    For a LoRA SFT (`sft_adapter` given) the adapter is merged into a new base (out_dir/merged_sft)
    and a fresh adapter is trained on it; the reference is that merged model with the adapter
    disabled. Why: the reference is then exactly the SFT model (not the pre-SFT base), and one
    copy of the weights in memory serves as both policy and reference. For full fine-tuning,
    `base` is the SFT checkpoint itself and the reference is scored before training starts.
    """
    out_dir = Path(out_dir)
    epochs = epochs or params.epochs
    every = save_every_epochs or params.save_every_epochs
    _free_inference_engines()
    if _launched_elsewhere(params):
        if sft_adapter:  # the ranks start from the merged SFT, which must exist before any of them loads it
            base, sft_adapter = merge_adapter(base, sft_adapter, out_dir / MERGED_SFT), None
        return launch("dpo", base, pairs, out_dir, params, seed, epochs, every, on_log)

    trainer, rows = dpo_trainer(base, pairs, out_dir, params, seed, sft_adapter, epochs, every, on_log)
    resume = _resume_point(checkpoint_dir(out_dir))
    output = trainer.train(resume_from_checkpoint=resume)
    tokens = sum(2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows)
    return _finish(trainer, out_dir, output, tokens, _resumed_epoch(resume))


def dpo_trainer(base: str, pairs: list[PreferencePair], out_dir: Path, params: DPOParams, seed: int,
                sft_adapter: str | None, epochs: int, every: int, on_log: OnLog | None = None) -> tuple[Any, list[dict]]:
    """The configured DPOTrainer (reference scored if precomputing, not yet trained) and its tokenized rows."""
    from transformers import set_seed
    from trl import DPOConfig

    from revlib.modeling import models

    set_seed(seed)
    policy_base = merge_adapter(base, sft_adapter, out_dir / MERGED_SFT) if sft_adapter else str(base)
    tokenizer = models.load_tokenizer(policy_base)
    rows = dpo_rows(tokenizer, pairs, params.max_length, params.max_prompt_length)
    config = DPOConfig(
        **_common_args(params, out_dir, seed, epochs),
        beta=params.beta,
        max_length=params.max_length,
        precompute_ref_log_probs=_precompute_ref(params),
        model_init_kwargs=_model_kwargs(params),
        **params.trainer,
    )
    trainer = _dpo_trainer_class()(
        model=policy_base,
        args=config,
        train_dataset=_dataset(rows, out_dir / "launch"),
        processing_class=tokenizer,
        peft_config=_lora_config(params, policy_base) if params.lora else None,
        callbacks=_callbacks(epochs, every, policy_base, params.lora is not None, on_log),
    )
    return _quiet(trainer), rows


def _precompute_ref(params: DPOParams) -> bool:
    """Whether trl scores the reference once before training.

    Not under DeepSpeed ZeRO-3: trl wraps the model in a second (inference) DeepSpeed engine for that pass,
    and ZeRO-3's parameter trace then breaks on the first training step ("pop from an empty deque"; seen
    with 2 processes on DeepSpeed 0.19.8). The reference is the same, scored each step instead.
    """
    if params.precompute_ref_log_probs and params.accelerate_config == "zero3":
        if _is_main_process():
            print("revlib: precompute_ref_log_probs is off under ZeRO-3; the reference is scored each step", flush=True)
        return False
    return params.precompute_ref_log_probs


def _dpo_trainer_class():
    from trl import DPOTrainer

    class _Pretokenized(DPOTrainer):
        """trl's DPOTrainer, fed rows that revlib already tokenized (prompt_ids/chosen_ids/rejected_ids).

        trl 1.16 re-tokenizes any dataset it is given; rows from `dpo_rows` skip that step so the
        render and the token-level truncation stay revlib's.
        """

        # trl 1.16 has no public way to skip this for DPO (SFTConfig's dataset_kwargs skip_prepare_dataset has no
        # DPOConfig twin; DPOTrainer skips only vision datasets), so the private hook is overridden
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(dataset.column_names):
                return dataset
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    return _Pretokenized


# ---------------------------------------------------------------- accelerate launch


LOG_PREFIX = "revlib.log "  # rank 0 prints each trainer log entry on such a line; the parent parses it


def launch(kind: str, base: str, data: list, out_dir: Path, params: SFTParams | DPOParams, seed: int, epochs: int,
           every: int, on_log: OnLog | None = None, sft_adapter: str | None = None) -> TrainResult:
    """Run sft/dpo in `params.num_processes` processes through `accelerate launch --config_file configs/<name>.yaml`.

    The processes' output goes to `<out_dir>/launch/launch.log` line by line as it is written (a killed
    kernel leaves it behind); their trainer log entries reach `on_log`, or are printed, as they happen.
    If `on_log` raises (or the caller is interrupted), the processes are killed and the error propagates.
    """
    config_file = CONFIGS / f"{params.accelerate_config}.yaml"
    if not config_file.exists():
        raise FileNotFoundError(f"accelerate config {config_file} not found (from accelerate_config: {params.accelerate_config})")
    job_dir = Path(out_dir) / "launch"
    data_file = io.write_jsonl(job_dir / f"{kind}_data.jsonl", (d.model_dump(mode="json") for d in data))
    job = {"kind": kind, "base": str(base), "data": str(data_file), "out_dir": str(out_dir),
           "params": params.model_dump(mode="json"), "seed": seed, "epochs": epochs, "save_every_epochs": every,
           "sft_adapter": sft_adapter}
    job_file = io.write_json(job_dir / "job.json", job)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config_file),
           "--num_processes", str(params.num_processes), "-m", "revlib.modeling.launch", str(job_file)]
    env = {**os.environ, LAUNCHED_ENV: "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    show = on_log or _print_progress(kind)
    log_path = job_dir / "launch.log"
    tail: list[str] = []
    with open(log_path, "a", encoding="utf-8", buffering=1) as log:
        log.write(f"=== {now_utc()} {' '.join(cmd)}\n")
        proc = subprocess.Popen(cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1, start_new_session=True)
        try:
            for line in proc.stdout:
                log.write(line)
                tail = (tail + [line])[-60:]
                if line.startswith(LOG_PREFIX):
                    try:
                        entry = json.loads(line[len(LOG_PREFIX):])
                    except json.JSONDecodeError:  # another rank's output cut into the line: the log keeps it
                        continue
                    show(entry)
            returncode = proc.wait()
        except BaseException:
            _kill_group(proc)
            log.write(f"=== {now_utc()} stopped by the caller; processes killed\n")
            raise
    if returncode != 0:
        raise RuntimeError(f"accelerate launch failed (exit {returncode}); log in {log_path}\n{''.join(tail)[-3000:]}")
    state = io.read_json(Path(out_dir) / "trainer_state.json")
    metrics = io.read_json(Path(out_dir) / "train_metrics.json")
    return TrainResult(checkpoints=load_checkpoints(out_dir), log_history=state.get("log_history", []), metrics=metrics)


def now_utc() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _kill_group(proc: subprocess.Popen) -> None:
    import signal

    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _print_progress(kind: str) -> OnLog:
    """One line per trainer log entry, flushed, so a notebook cell shows a launched run as it goes."""

    def show(entry: dict[str, Any]) -> None:
        step, total = entry.get("step"), entry.get("max_steps")
        parts = [f"[{kind}] step {step}" + (f"/{total}" if total else "")]
        for key in ("epoch", "loss", "rewards/margins", "learning_rate", "train_runtime"):
            if entry.get(key) is not None:
                value = entry[key]
                parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
        print("  ".join(parts), flush=True)

    return show


def _print_log_line(entry: dict[str, Any]) -> None:
    sys.stdout.write(LOG_PREFIX + json.dumps(entry, default=float) + "\n")  # one write: lines stay whole in the pipe
    sys.stdout.flush()


def run_job(job_file: str | Path) -> TrainResult:
    """Entry point inside each launched process (see revlib/launch.py)."""
    from revlib.core.records import read_pairs, read_records

    job = io.read_json(job_file)
    kwargs = dict(seed=job["seed"], epochs=job["epochs"], save_every_epochs=job["save_every_epochs"],
                  on_log=_print_log_line)
    if job["kind"] == "sft":
        return sft(job["base"], read_records(job["data"]), Path(job["out_dir"]), SFTParams(**job["params"]), **kwargs)
    if job["kind"] == "dpo":
        return dpo(job["base"], read_pairs(job["data"]), Path(job["out_dir"]), DPOParams(**job["params"]),
                   sft_adapter=job["sft_adapter"], **kwargs)
    raise ValueError(f"unknown job kind {job['kind']!r}; expected 'sft' or 'dpo'")


# ---------------------------------------------------------------- notebook helpers


def curves_rows(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-step training log entries (the final summary entry left out), for report.curves."""
    return [e for e in log_history if "loss" in e and "train_runtime" not in e]


def checkpoint_table(checkpoints: list[Checkpoint]) -> list[dict[str, Any]]:
    return [{"epoch": c.epoch, "step": c.step, "path": str(c.path), "adapter": c.adapter is not None,
             "base": c.base} for c in checkpoints]


def expected_epochs(epochs: int, every: int) -> list[int]:
    """The epochs a schedule saves: every `every`-th, and the last."""
    return sorted({e for e in range(every, epochs + 1, every)} | {epochs})


__all__ = [
    "Checkpoint", "TrainResult", "sft", "dpo", "load_checkpoints", "load_model_for", "sft_rows", "dpo_rows",
    "merge_adapter", "expected_epochs", "curves_rows", "checkpoint_table", "run_job", "launch",
]
