"""SFT and directional DPO through trl and peft (notebooks 02 and 03).

Both trainers get pre-tokenized rows (`revlib.modeling.train_rows`), so training, probes and evaluation
see the same token sequences; params naming an accelerate config train through `revlib.modeling.launch`. Checkpoints follow an epoch schedule; each finished
checkpoint gets a `revlib_checkpoint.json` marker written last, so a checkpoint without one is a
save that was cut short. Re-running into the same `out_dir` resumes from the last marked checkpoint; only
that newest checkpoint keeps its optimizer state unless params say `keep_optimizer_states: all`.

Where this departs from trl's defaults, and why:
- gradient checkpointing off unless asked (trl turns it on; it only costs time on small models);
- SFT rows are pre-truncated in tokens; batches are padding-free with flash-attention (on CPU/sdpa the
  block-diagonal mask costs more than the padding it saves, measured 1.6x slower);
- DPO scores the reference once before training (`precompute_ref_log_probs`) instead of every step;
- with LoRA on the top layers only, the frozen lower layers run once per row, not once per epoch
  (`revlib.modeling.frozen_stack`; one process, no gradient checkpointing);
- beta, lengths, epochs and max_steps always come from params, never from trl's defaults.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState, init_empty_weights
from datasets import Dataset, load_from_disk
from peft import LoraConfig, PeftModel
from transformers import AutoConfig, AutoModelForCausalLM, TrainerCallback, set_seed
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

from revlib.core import io
from revlib.core.io import Metrics
from revlib.core.records import PreferencePair, Record
from revlib.modeling import frozen_stack, labelled_head, launch, models, rollouts, threads
from revlib.modeling.launch import OnLog
from revlib.modeling.train_rows import Truncation, dpo_rows, sft_rows
from revlib.params.train import DPOParams, SFTParams

MARKER = "revlib_checkpoint.json"
CHECKPOINTS = "checkpoints"
MERGED_SFT = "merged_sft"
OPTIMIZER_FILES = ("optimizer.pt", "scheduler.pt")  # what resume needs beyond the weights; big (2x the trained weights)
ALLOW_CPU_ENV = "REVLIB_ALLOW_CPU"  # "1": a GPU launch config may run as CPU processes (the multiprocess test tier)

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


def _dataset(rows: list[dict], shared_dir: Path | None = None) -> Any:
    """The rows as a datasets.Dataset; in several processes, one on disk under `shared_dir` that every rank opens.

    Why on disk: trl caches the precomputed reference log-probs next to the dataset's file, written by
    rank 0 and read by the others; an in-memory dataset puts that file in each process's own temp dir.
    """
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
    tokenizer = models.load_tokenizer(ckpt.path)
    if ckpt.adapter is None:
        return models.load_model(ckpt.path, dtype=dtype, device=device).eval(), tokenizer
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


def drop_optimizer_states(ckpt_root: Path, keep: Path) -> list[Path]:
    """Delete the optimizer and scheduler state of every finished checkpoint but `keep` (the newest).

    Resume needs only the newest finished checkpoint's state, and `keep` is marked before the older ones lose
    theirs, so a kill at any point leaves one resumable checkpoint. The weights (adapter or model) stay:
    04 scores every checkpoint. At 7B with LoRA r256 the state is about 9 GB a checkpoint.
    """
    dropped = []
    for folder in ckpt_root.glob("checkpoint-*"):
        if folder == keep or not (folder / MARKER).exists():
            continue
        for path in [*(folder / name for name in OPTIMIZER_FILES), *folder.glob("global_step*")]:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)  # DeepSpeed's sharded optimizer state
            elif path.exists():
                path.unlink()
            else:
                continue
            dropped.append(path)
    return dropped


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _callbacks(total_epochs: int, every: int, base: str, lora: bool, keep_optimizer: str, on_log: OnLog | None,
               every_steps: int | None = None) -> list:
    class EpochSchedule(TrainerCallback):
        """Keep the epoch save only on the schedule (every N epochs, and always the last one), or with `every_steps`
        every N optimizer steps instead; mark saves done.

        Each step is saved at most once: the last step of a run is both a step end and an epoch end, and
        trl would otherwise write the same checkpoint twice (a second full write of adapter and optimizer).
        """

        def __init__(self):
            self.saved_step = -1

        def on_epoch_end(self, args, state, control, **kwargs):
            epoch = int(round(state.epoch or 0))
            due = state.global_step >= state.max_steps
            if every_steps is None:
                due = due or epoch % every == 0 or epoch >= total_epochs
            control.should_save = due and state.global_step != self.saved_step
            return control

        def on_step_end(self, args, state, control, **kwargs):
            # max_steps can end training inside an epoch: save there too, so a run always has a final checkpoint
            due = every_steps is not None and state.global_step % every_steps == 0
            if (due or state.global_step >= state.max_steps) and not control.should_save:
                control.should_save = True
            return control

        def on_save(self, args, state, control, **kwargs):
            self.saved_step = state.global_step
            if state.is_world_process_zero:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                adapter = str(folder) if lora else None
                meta = Checkpoint(folder, round(float(state.epoch or 0), 4), state.global_step, base, adapter)
                io.write_json(folder / MARKER, meta.to_json())
                if keep_optimizer == "last":
                    drop_optimizer_states(Path(args.output_dir), keep=folder)
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            if on_log and logs and state.is_world_process_zero:
                on_log({"step": state.global_step, "epoch": state.epoch, "max_steps": state.max_steps, **logs})
            return control

    threads.shared().tick()  # a first load sample while the trainer builds: its first step already reads the load

    class CpuThreads(TrainerCallback):
        """Torch's threads sized to the cores other programs leave free, between steps (revlib.modeling.threads)."""

        def on_step_begin(self, args, state, control, **kwargs):
            if args.device.type == "cpu":
                threads.shared().tick()
            return control

    return [EpochSchedule(), CpuThreads()]


# ---------------------------------------------------------------- shared trainer setup


def _model_kwargs(params: SFTParams | DPOParams) -> dict[str, Any]:
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
    lo = params.lora
    layers, targets = None, lo.target_modules
    if lo.top_layers:
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


def _tracker_env(params: SFTParams | DPOParams, out_dir: Path) -> None:
    """Weights & Biases, where report_to asks for it: offline when no WANDB_API_KEY is set (a machine without the
    key still trains; `wandb sync <run dir>/wandb/offline-run-*` uploads later; WANDB_MODE=online with a `wandb
    login` overrides), its files in the run directory rather than the working directory. The project and the run's
    name (experiment/stage/cell) come from the notebook's context. Set in this process before the trainer exists,
    so launched processes and the trainer's W&B callback read the same."""
    if "wandb" not in params.report_to:
        return
    if not os.environ.get("WANDB_API_KEY"):
        os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_DIR", str(Path(out_dir).resolve()))


def _common_args(params: SFTParams | DPOParams, out_dir: Path, seed: int, epochs: int) -> dict[str, Any]:
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
        use_cpu=_use_cpu(params),
        remove_unused_columns=True,
        ddp_find_unused_parameters=False,
    )


def _resumed_epoch(resume: str | None) -> float:
    """The epoch a run resumes at (0 for a fresh run)."""
    if not resume:
        return 0.0
    return float(io.read_json(Path(resume) / MARKER)["epoch"])


def cut_columns(metrics: Metrics) -> dict[str, int | str]:
    """A run table's columns saying what `max_length` cut: rows cut, and of them, rows whose answer line was lost."""
    cut = metrics.get("max_length_cut")
    if not isinstance(cut, dict):
        return {"cut by max_length": "not recorded"}
    return {"cut by max_length": cut["cut"], "of them lost the answer": cut["answer_lost"]}


def _finish(trainer: Any, out_dir: Path, train_output: Any, epoch_tokens: int, cut: Truncation,
            start_epoch: float = 0.0) -> TrainResult:
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
    metrics["max_length_cut"] = cut.to_json()
    metrics["frozen_state_reuse"] = _reuse_metrics(trainer)
    if trainer.is_world_process_zero():
        with io.atomic_path(Path(out_dir) / "trainer_state.json") as tmp:
            state.save_to_json(str(tmp))
        io.write_json(Path(out_dir) / "train_metrics.json", metrics)
    return TrainResult(checkpoints=load_checkpoints(out_dir), log_history=list(state.log_history), metrics=metrics)


def _quiet(trainer: Any) -> Any:
    """Drop the per-log stdout printer (notebooks show curves instead)."""
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def _reuses_frozen_states(params: SFTParams | DPOParams) -> bool:
    lo = params.lora
    return bool(lo and lo.top_layers and lo.reuse_frozen_states and not params.gradient_checkpointing
                and int(os.environ.get("WORLD_SIZE", "1")) <= 1)


def _install_lower_states(trainer: Any) -> None:
    """Hooks that compute the frozen lower layers' output once per row (revlib.modeling.frozen_stack), removed
    when training ends; once per trainer."""
    if getattr(trainer, "lower_states", None) is not None:
        return
    k = frozen_stack.frozen_layers(trainer.model)
    if not k:
        return
    trainer.lower_states = frozen_stack.LowerStates(trainer.model, k)

    class RemoveHooks(TrainerCallback):
        def on_train_end(self, args, state, control, **kwargs):
            trainer.lower_states.remove()
            return control

    trainer.add_callback(RemoveHooks())


def _reuse_frozen_states(trainer: Any, params: SFTParams | DPOParams) -> Any:
    """With LoRA on the top layers only, in one process: the lower layers' output is computed once per row and
    reused; the counts go into the run's metrics."""
    if _reuses_frozen_states(params):
        _install_lower_states(trainer)
    return trainer


def _reuse_metrics(trainer: Any) -> dict[str, Any] | None:
    states = getattr(trainer, "lower_states", None)
    if states is None:
        return None
    return {"frozen_layers": states.k, "rows_computed": states.misses, "rows_reused": states.hits,
            "calls_whole_stack": states.passed_through}


def _free_inference_engines() -> None:
    """A vLLM engine left by rollouts in this process holds most of the GPU; training (here or in launched
    processes) needs it back."""
    rollouts.free_engines()


def _launch(kind: str, base: str, data: list, out_dir: Path, params: SFTParams | DPOParams, seed: int, epochs: int,
            every: int, on_log: OnLog | None) -> TrainResult:
    """Train in `params.num_processes` processes (revlib.modeling.launch); read their results back."""
    job = {"base": str(base), "params": params.model_dump(mode="json"), "seed": seed, "epochs": epochs,
           "save_every_epochs": every}
    launch.launch(kind, job, data, out_dir, params.accelerate_config, params.num_processes, on_log)
    state = io.read_json(Path(out_dir) / "trainer_state.json")
    metrics = io.read_json(Path(out_dir) / "train_metrics.json")
    return TrainResult(checkpoints=load_checkpoints(out_dir), log_history=state.get("log_history", []), metrics=metrics)


def _say(line: str | None) -> None:
    """A line for the run's output, once (rank 0)."""
    if line and _is_main_process():
        print(f"revlib: {line}", flush=True)


def _use_cpu(params: SFTParams | DPOParams) -> bool:
    """Train on CPU only where no CUDA device is visible, and never silently.

    A launch config that asks for GPUs (ddp, zero3) without CUDA stops here: a broken driver would otherwise
    turn an 8-GPU run into 8 CPU processes. REVLIB_ALLOW_CPU=1 allows it on purpose (the multiprocess tests).
    """
    if torch.cuda.is_available():
        return False
    asked = launch.gpus_asked(params.accelerate_config, params.num_processes)
    if asked and os.environ.get(ALLOW_CPU_ENV) != "1":
        raise RuntimeError(f"accelerate_config {params.accelerate_config!r} asks for {asked} GPU(s), but CUDA is not "
                           f"available ({launch.cuda_diagnosis()}); set {ALLOW_CPU_ENV}=1 to train on CPU processes "
                           f"on purpose")
    _say("no CUDA device visible: training on CPU")
    return True


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
    if launch.launched_elsewhere(params.accelerate_config):
        return _launch("sft", base, records, out_dir, params, seed, epochs, every, on_log)

    with labelled_head.labelled_positions_only(params.head_on_labels_only):
        trainer, rows, cut = sft_trainer(base, records, out_dir, params, seed, epochs, every, on_log)
        resume = _resume_point(checkpoint_dir(out_dir))
        output = trainer.train(resume_from_checkpoint=resume)
    return _finish(trainer, out_dir, output, sum(len(r["input_ids"]) for r in rows), cut, _resumed_epoch(resume))


def sft_trainer(base: str, records: list[Record], out_dir: Path, params: SFTParams, seed: int, epochs: int,
                every: int, on_log: OnLog | None = None) -> tuple[Any, list[dict], Truncation]:
    """The configured SFTTrainer (not yet trained), its tokenized rows, and what max_length cut from them."""
    set_seed(seed)
    _tracker_env(params, out_dir)
    tokenizer = models.load_tokenizer(base)
    rows, cut = sft_rows(tokenizer, records, params.max_length)
    _say(cut.note(params.max_length))
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
        callbacks=_callbacks(epochs, every, str(base), params.lora is not None, params.keep_optimizer_states, on_log,
                             params.save_every_steps),
    )
    return _reuse_frozen_states(_quiet(trainer), params), rows, cut


# ---------------------------------------------------------------- DPO


def merge_adapter(base: str, adapter: str, target: Path) -> str:
    """Merge a LoRA adapter into its base and save the result (atomically) as a new base model folder."""
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
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return contextlib.nullcontext()
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
    if launch.launched_elsewhere(params.accelerate_config):
        if sft_adapter:  # the ranks start from the merged SFT, which must exist before any of them loads it
            base = merge_adapter(base, sft_adapter, out_dir / MERGED_SFT)
        return _launch("dpo", base, pairs, out_dir, params, seed, epochs, every, on_log)

    with labelled_head.labelled_positions_only(params.head_on_labels_only):  # the reference pass is in the constructor
        trainer, rows, cut = dpo_trainer(base, pairs, out_dir, params, seed, sft_adapter, epochs, every, on_log)
        resume = _resume_point(checkpoint_dir(out_dir))
        output = trainer.train(resume_from_checkpoint=resume)
    tokens = sum(2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows)
    return _finish(trainer, out_dir, output, tokens, cut, _resumed_epoch(resume))


def dpo_trainer(base: str, pairs: list[PreferencePair], out_dir: Path, params: DPOParams, seed: int,
                sft_adapter: str | None, epochs: int, every: int,
                on_log: OnLog | None = None) -> tuple[Any, list[dict], Truncation]:
    """The configured DPOTrainer (reference scored if precomputing, not yet trained), its tokenized rows, and
    what max_length cut from them."""
    set_seed(seed)
    _tracker_env(params, out_dir)
    policy_base = merge_adapter(base, sft_adapter, out_dir / MERGED_SFT) if sft_adapter else str(base)
    tokenizer = models.load_tokenizer(policy_base)
    rows, cut = dpo_rows(tokenizer, pairs, params.max_length, params.max_prompt_length)
    _say(cut.note(params.max_length))
    config = DPOConfig(
        **_common_args(params, out_dir, seed, epochs),
        beta=params.beta,
        max_length=params.max_length,
        precompute_ref_log_probs=_precompute_ref(params),
        model_init_kwargs=_model_kwargs(params),
        **params.trainer,
    )
    trainer = _dpo_trainer_class(_reuses_frozen_states(params))(
        model=policy_base,
        args=config,
        train_dataset=_dataset(rows, out_dir / "launch"),
        processing_class=tokenizer,
        peft_config=_lora_config(params, policy_base) if params.lora else None,
        callbacks=_callbacks(epochs, every, policy_base, params.lora is not None, params.keep_optimizer_states, on_log,
                             params.save_every_steps),
    )
    return _reuse_frozen_states(_quiet(trainer), params), rows, cut


def _precompute_ref(params: DPOParams) -> bool:
    """Whether trl scores the reference once before training (not where revlib switches it off: DPOParams.switched_off)."""
    for line in params.switched_off():
        _say(line)
    return params.precompute_ref_log_probs and not params.switched_off()


def _dpo_trainer_class(reuse_frozen_states: bool = False):
    class _Pretokenized(DPOTrainer):
        """trl's DPOTrainer, fed rows that revlib already tokenized (prompt_ids/chosen_ids/rejected_ids).

        trl 1.16 re-tokenizes any dataset it is given; rows from `dpo_rows` skip that step so the
        render and the token-level truncation stay revlib's. With `reuse_frozen_states` the reference pass
        before training already fills the lower layers' cache (the reference and the policy share them).
        """

        def _precompute_ref_logps(self, dataset, name, batch_size):
            if reuse_frozen_states:
                _install_lower_states(self)
            return super()._precompute_ref_logps(dataset, name, batch_size)

        # trl 1.16 has no public way to skip this for DPO (SFTConfig's dataset_kwargs skip_prepare_dataset has no
        # DPOConfig twin; DPOTrainer skips only vision datasets), so the private hook is overridden
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(dataset.column_names):
                return dataset
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    return _Pretokenized


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
    "Checkpoint", "TrainResult", "sft", "dpo", "load_checkpoints", "load_model_for", "merge_adapter",
    "expected_epochs", "curves_rows", "checkpoint_table", "drop_optimizer_states",
]
