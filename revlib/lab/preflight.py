"""`revlib preflight PARAMS`: the machine a run is about to spend days on, checked against the plan first.

`revlib check` checks the params; this checks the machine: the GPU memory each training process needs (estimated
by revlib.lab.gpu_memory, whose docstring states the formula) against what the visible GPUs have, the packages the
plan imports, the driver's CUDA against torch's build, the API keys the plan reads (set or not: a value is never
read into the report), the Hub where the plan downloads, host memory for CPU offload, and disk. Every fact about the
machine is gathered once into `Machine`, so tests stub the GPUs, the packages and the driver on a CPU machine. A
problem that would stop the run here makes the command exit 2.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from revlib.lab import hardware
from revlib.lab.gpu_memory import Launch, Memory, estimate, read_launch, remedies
from revlib.lab.hardware import GB
from revlib.lab.plan import Cell, plan
from revlib.modeling import launch
from revlib.params import Experiment
from revlib.params.stages import BY_NAME
from revlib.params.train import DPOParams, SFTParams

# distribution -> module, for the packages a plan can need beyond the base install
PACKAGES = {"deepspeed": "deepspeed", "flash-attn": "flash_attn", "liger-kernel": "liger_kernel", "vllm": "vllm",
            "ray": "ray", "wandb": "wandb"}
HF_TOKEN_ENVS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
GATED = {"gpqa_diamond"}  # benchmarks gated on the Hub (accept the terms, then a token)
HUB_BENCHMARKS = ("aime24", "math500", "gpqa_diamond")


# ---------------------------------------------------------------- the machine


@dataclass(frozen=True)
class Machine:
    """Every fact the preflight reads about the machine; `probe()` gathers them, tests build one by hand."""

    gpus: int
    gpu_memory_gb: tuple[float, ...] = ()  # memory a process can allocate on each visible GPU (free, else total)
    packages: dict[str, str | None] = field(default_factory=dict)  # distribution -> version, None: does not import
    driver_cuda: str | None = None  # the CUDA version the NVIDIA driver supports (nvidia-smi); None: no driver
    torch_cuda: str | None = None  # torch.version.cuda; None: a CPU-only build
    torch_version: str = ""
    env_set: frozenset[str] = frozenset()  # names of the variables asked about that are set (never their values)
    hub_token: bool = False  # a Hub token in HF_TOKEN / HUGGING_FACE_HUB_TOKEN or from `huggingface-cli login`
    hub_offline: bool = False  # HF_HUB_OFFLINE is on
    hub_reachable: bool | None = None  # None: not tried (offline, or nothing to download)
    hub_cached: frozenset[str] = frozenset()  # Hub repo ids already in the local Hub cache
    disk_free_gb: float = 0.0  # free space where the run writes
    host_memory_gb: float = 0.0
    cpu_adam: bool = False  # DeepSpeed's CPU Adam (ZeRO-Offload's optimizer) is prebuilt, or a C++ compiler can build it

    def gpu_memory(self, processes: int) -> float | None:
        """Bytes each of the first `processes` visible GPUs offers at least (None: no GPU visible)."""
        have = self.gpu_memory_gb[:max(processes, 1)]
        return min(have) * GB if have else None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}  # huggingface_hub's reading


def _package_version(dist: str, module: str, real_import: bool) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown version"
    if real_import:  # a compiled extension built for another torch is found but fails to import
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - any failure to import is the fact reported
            return None
    return version


def _driver_cuda() -> str | None:
    try:
        import pynvml  # nvidia-ml-py, which vllm installs

        pynvml.nvmlInit()
        v = pynvml.nvmlSystemGetCudaDriverVersion()
        return f"{v // 1000}.{v % 1000 // 10}"
    except Exception:  # noqa: BLE001 - absent, or no driver: ask nvidia-smi
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"CUDA Version:\s*([0-9.]+)", out)
    return found.group(1) if found else None


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    import httpx
    from huggingface_hub import constants

    try:
        return httpx.head(constants.ENDPOINT, timeout=timeout_s, follow_redirects=True).status_code < 500
    except httpx.HTTPError:
        return False


def _hub_cached() -> frozenset[str]:
    from huggingface_hub import scan_cache_dir

    try:
        return frozenset(repo.repo_id for repo in scan_cache_dir().repos)
    except Exception:  # noqa: BLE001 - no cache directory yet, or an unreadable one: nothing cached
        return frozenset()


def _cpu_adam() -> bool:
    """Whether DeepSpeed can run its CPU Adam: built into the install (DS_BUILD_CPU_ADAM=1), or a C++ compiler to build
    it on first use. Read from deepspeed's install record, without importing deepspeed."""
    spec = importlib.util.find_spec("deepspeed")
    if spec is None or not spec.submodule_search_locations:
        return False
    record = Path(list(spec.submodule_search_locations)[0]) / "git_version_info_installed.py"
    prebuilt = record.is_file() and re.search(r"'cpu_adam':\s*True", record.read_text()) is not None
    return prebuilt or shutil.which("c++") is not None


def _existing_ancestor(path: Path) -> Path:
    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def probe(exp: Experiment) -> Machine:
    """The facts of this machine that the plan's checks read."""
    import psutil
    import torch
    from huggingface_hub import constants

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    memory = []
    for i in range(gpus):
        try:
            free, _ = torch.cuda.mem_get_info(i)
        except RuntimeError:  # a device that cannot make a context: its total
            free = torch.cuda.get_device_properties(i).total_memory
        memory.append(free / GB)
    packages = {dist: _package_version(dist, module, real_import=gpus > 0 and dist in ("flash-attn", "liger-kernel"))
                for dist, module in PACKAGES.items()}
    names = {name for name, _ in api_keys(exp)} | set(HF_TOKEN_ENVS)
    offline = _truthy(os.environ.get("HF_HUB_OFFLINE"))
    downloads = hub_downloads(exp)
    return Machine(
        gpus=gpus, gpu_memory_gb=tuple(memory), packages=packages, driver_cuda=_driver_cuda(),
        torch_cuda=torch.version.cuda, torch_version=torch.__version__,
        env_set=frozenset(n for n in names if os.environ.get(n)),
        hub_token=any(os.environ.get(n) for n in HF_TOKEN_ENVS) or Path(constants.HF_TOKEN_PATH).is_file(),
        hub_offline=offline, hub_reachable=_hub_reachable() if downloads and not offline else None,
        hub_cached=_hub_cached() if downloads else frozenset(),
        disk_free_gb=shutil.disk_usage(_existing_ancestor(exp.run_root)).free / GB,
        host_memory_gb=psutil.virtual_memory().total / GB, cpu_adam=_cpu_adam(),
    )


# ---------------------------------------------------------------- the plan's cells


def cell_settings(exp: Experiment, cell: Cell) -> SFTParams | DPOParams:
    """The training settings a 02 or 03 cell runs with (a named DPO variant's own, where it has them)."""
    if cell.stage == "02_sft":
        return exp.sft
    variant = cell.values.get("variant", "directional")
    return exp.dpo.for_variant(variant) if hasattr(exp.dpo, "for_variant") else exp.dpo


def attention(settings: SFTParams | DPOParams, machine: Machine) -> str:
    """The attention implementation the trainer will pick on this machine (revlib.modeling.train._model_kwargs)."""
    if settings.attn_implementation != "auto":
        return settings.attn_implementation
    return "flash_attention_2" if machine.gpus and machine.packages.get("flash-attn") else "sdpa"


@dataclass(frozen=True)
class CellMemory:
    cell: Cell
    settings: SFTParams | DPOParams
    launch: Launch
    attn: str
    memory: Memory | None  # None: the model's architecture is unknown
    model: str
    available: float | None  # bytes per GPU the cell's processes get (None: no GPU visible)
    remedies: tuple[str, ...] = ()

    @property
    def at_risk(self) -> bool:
        return self.memory is not None and self.available is not None and self.memory.peak > self.available


def training_memory(exp: Experiment, machine: Machine) -> list[CellMemory]:
    """The estimate for every 02 and 03 cell of the plan, set against the GPUs its processes would get."""
    out = []
    for cell in plan(exp):
        if cell.stage not in ("02_sft", "03_dpo"):
            continue
        settings = cell_settings(exp, cell)
        name, arch = hardware.arch_of(exp.model(cell.values["model"]))
        run = read_launch(settings.accelerate_config, settings.num_processes)
        attn = attention(settings, machine)
        processes = run.processes if launch.gpus_asked(settings.accelerate_config, settings.num_processes) else 1
        available = machine.gpu_memory(processes)
        memory = estimate(arch, settings, run, attn) if arch is not None and arch.vocab else None
        risky = memory is not None and available is not None and memory.peak > available
        out.append(CellMemory(cell, settings, run, attn, memory, name, available,
                              remedies(arch, settings, attn, available) if risky else ()))
    return out


# ---------------------------------------------------------------- what the plan needs


@dataclass(frozen=True)
class Need:
    what: str  # a package, a variable, a Hub repo
    why: str  # the stage and setting that need it
    required: bool = True  # False: used when present (auto), the run goes on without it


def packages_needed(exp: Experiment) -> list[Need]:
    """The optional packages the plan imports, and why."""
    needs: list[Need] = []
    stages = set(exp.stages)
    for stage, section in (("02_sft", exp.sft), ("03_dpo", exp.dpo)):
        if section is None or stage not in stages:
            continue
        variants = [section] + ([section.for_variant(v) for v in getattr(section, "variants", {})]
                                if stage == "03_dpo" else [])
        for s in variants:
            if s.accelerate_config and read_launch(s.accelerate_config, s.num_processes).deepspeed:
                needs.append(Need("deepspeed", f"{stage}: accelerate_config {s.accelerate_config}"))
            if s.attn_implementation == "flash_attention_2":
                needs.append(Need("flash-attn", f"{stage}: attn_implementation flash_attention_2"))
            elif s.attn_implementation == "auto":
                needs.append(Need("flash-attn", f"{stage}: attn_implementation auto, sdpa without it", False))
            if s.trainer.get("use_liger_kernel"):
                needs.append(Need("liger-kernel", f"{stage}: trainer use_liger_kernel"))
            if "wandb" in s.report_to:
                needs.append(Need("wandb", f"{stage}: report_to wandb"))
    b = exp.benchmarks
    if b is not None and "05_benchmarks" in stages and b.backend == "vllm":
        needs.append(Need("vllm", "05_benchmarks: backend vllm"))
        if b.data_parallel_size > 1:
            needs.append(Need("ray", f"05_benchmarks: lm-eval's vLLM backend with data_parallel_size {b.data_parallel_size}"))
    teacher = exp.data.teacher
    if teacher.kind == "hf" and "01_reverse_data" in stages and teacher.engine != "hf":
        needs.append(Need("vllm", f"01_reverse_data: teacher engine {teacher.engine}", teacher.engine == "vllm"))
    if exp.negatives is not None and "06_negative_data" in stages and exp.negatives.engine != "hf":
        needs.append(Need("vllm", f"06_negative_data: rollout engine {exp.negatives.engine}",
                          exp.negatives.engine == "vllm"))
    seen: dict[tuple[str, str], Need] = {}
    for n in needs:
        seen.setdefault((n.what, n.why), n)
    return list(seen.values())


def _env_fields(node: Any, path: str) -> list[tuple[str, str]]:
    """(variable name, params path) of every `*_env` field holding a name under a params section."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            where = f"{path}.{k}"
            if isinstance(k, str) and k.endswith("_env") and isinstance(v, str) and v:
                out.append((v, where))
            else:
                out += _env_fields(v, where)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _env_fields(v, f"{path}[{i}]")
    return out


def api_keys(exp: Experiment) -> list[tuple[str, str]]:
    """(variable, why) for every environment variable the plan's stages read a key from (their names only)."""
    dump = exp.model_dump(mode="json")
    out = []
    for stage in exp.stages:  # a section counts where a stage of the plan reads it (01: data, 05: benchmarks...)
        for section in BY_NAME[stage].reads:
            out += [(name, f"{stage}: {where}") for name, where in _env_fields(dump.get(section), section)]
    return list(dict.fromkeys(out))


def gated_sets(exp: Experiment) -> list[str]:
    b = exp.benchmarks
    if b is None or "05_benchmarks" not in exp.stages:
        return []
    return [t for t in b.tasks if t in GATED and t not in b.local_paths]


def _benchmark_repo(task: str) -> str:
    from revlib.evaluation.harness import TASK_DIR

    for line in (TASK_DIR / f"revlib_{task}.yaml").read_text().splitlines():
        if line.startswith("dataset_path:"):
            return line.split(":", 1)[1].strip()
    raise ValueError(f"no dataset_path in the lm-eval task of {task}")


def hub_downloads(exp: Experiment) -> list[Need]:
    """Hub models and data sets the plan downloads (repo id as `what`)."""
    out = []
    stages = set(exp.stages)
    if "00_base_model" in stages:
        out += [Need(m.id, f"00_base_model: base model {m.name}") for m in exp.base_models if m.source == "hub"]
    if "01_reverse_data" in stages:
        src, teacher = exp.data.source, exp.data.teacher
        if src.kind == "s1k" and src.path is None:
            out.append(Need(src.dataset, "01_reverse_data: data.source"))
        if src.kind == "r1k" and src.dataset:
            out.append(Need(src.dataset, "01_reverse_data: data.source"))
        if teacher.kind == "hf" and not Path(teacher.model).exists():
            out.append(Need(teacher.model, "01_reverse_data: data.teacher"))
    b = exp.benchmarks
    if b is not None and "05_benchmarks" in stages:
        out += [Need(_benchmark_repo(t), f"05_benchmarks: {t}") for t in b.tasks
                if t in HUB_BENCHMARKS and t not in b.local_paths]
    return out


# ---------------------------------------------------------------- the report


@dataclass
class Report:
    """What the preflight found: sections of lines, and the problems that would stop the run here."""

    sections: list[tuple[str, list[str]]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    memory: list[CellMemory] = field(default_factory=list)

    def add(self, title: str, lines: list[str]) -> None:
        self.sections.append((title, lines))


def _version_tuple(v: str | None) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v or "")[:2])


def check(exp: Experiment, machine: Machine) -> Report:
    """Every check of the plan against the machine."""
    report = Report()
    _check_gpus(exp, machine, report)
    _check_memory(exp, machine, report)
    _check_packages(exp, machine, report)
    _check_keys(exp, machine, report)
    _check_hub(exp, machine, report)
    _check_disk(exp, machine, report)
    return report


def _check_gpus(exp: Experiment, machine: Machine, report: Report) -> None:
    asks = hardware.gpu_demand(exp)
    need = max((n for _, n in asks), default=0)
    lines = [f"visible: {machine.gpus}" + (f" ({', '.join(f'{g:.1f}' for g in machine.gpu_memory_gb)} GB free)"
                                           if machine.gpus else "")]
    lines += [f"{what}: {n}" for what, n in asks]
    if machine.gpus < need:
        report.problems.append(f"the plan asks for {need} GPU(s) and this machine shows {machine.gpus}")
    build = f"torch {machine.torch_version} " + (f"built for CUDA {machine.torch_cuda}" if machine.torch_cuda
                                                 else "(a CPU-only build)")
    lines.append(f"driver: CUDA {machine.driver_cuda}" if machine.driver_cuda else "driver: no NVIDIA driver found "
                 "(nvidia-smi)")
    lines.append(build)
    if need:
        if machine.torch_cuda is None:
            report.problems.append(f"{build}: a GPU plan needs torch's CUDA build (README: Installing on a GPU machine)")
        elif machine.driver_cuda is None:
            report.problems.append("no NVIDIA driver found (neither pynvml nor nvidia-smi answers)")
        else:
            driver, built = _version_tuple(machine.driver_cuda), _version_tuple(machine.torch_cuda)
            if driver[:1] < built[:1]:
                report.problems.append(f"the driver supports CUDA {machine.driver_cuda}, older than torch's CUDA "
                                       f"{machine.torch_cuda}: update the NVIDIA driver to one for CUDA {built[0]}")
            elif driver < built:
                lines.append(f"the driver's CUDA {machine.driver_cuda} is older than torch's {machine.torch_cuda}: "
                             "it runs in CUDA's minor-version compatibility (kernels needing PTX JIT may fail)")
    report.add("GPUs and CUDA", lines)


def _check_memory(exp: Experiment, machine: Machine, report: Report) -> None:
    cells = training_memory(exp, machine)
    report.memory = cells
    if not cells:
        return
    lines, shown = [], set()
    for c in cells:
        if c.memory is None:
            lines.append(f"{c.cell.key}: size unknown (no architecture known for {c.model})")
            continue
        have = (f"of {c.available / GB:.1f} GB per GPU" if c.available is not None else "no GPU visible to compare")
        verdict = ("AT RISK" if c.at_risk else "fits") if c.available is not None else "not compared"
        lines.append(f"{c.cell.key}: peak {c.memory.peak / GB:.1f} GB per GPU process, {have}: {verdict}")
        group = (c.cell.stage, c.model, c.settings.model_dump_json())
        if group not in shown:
            shown.add(group)
            sequences = c.settings.batch_size * (2 if c.cell.stage == "03_dpo" else 1)
            lines.append(f"    {c.model}, {c.launch.describe()}, {sequences} x {c.settings.max_length:,} tokens "
                         f"a micro-batch, {c.attn}, "
                         f"liger {'on' if c.settings.trainer.get('use_liger_kernel') else 'off'}, gradient checkpointing "
                         f"{'on' if c.settings.gradient_checkpointing else 'off'}: {c.memory.parts()}")
        if c.at_risk:
            fix = "; ".join(c.remedies) if c.remedies else "no single setting brings it under; combine them or use larger GPUs"
            report.problems.append(f"{c.cell.key}: estimated peak {c.memory.peak / GB:.1f} GB per GPU process, above "
                                   f"the {c.available / GB:.1f} GB it has; would fit with: {fix}")
    offloaded = [c for c in cells if c.memory is not None and c.memory.host]
    if offloaded:
        need = max(c.memory.host for c in offloaded)
        lines.append(f"host memory for CPU offload: {need / GB:.0f} GB needed (DeepSpeed's estimate with its 1.5 "
                     f"buffer), {machine.host_memory_gb:.0f} GB on this machine")
        if need > machine.host_memory_gb * GB:
            report.problems.append(f"CPU offload needs about {need / GB:.0f} GB of host memory; this machine has "
                                   f"{machine.host_memory_gb:.0f} GB")
    if any(c.launch.offload_optimizer for c in cells) and not machine.cpu_adam:
        report.problems.append("ZeRO-Offload's optimizer is DeepSpeed's CPU Adam, built on first use with a C++ "
                               "compiler, and this machine has neither the compiler (c++) nor a deepspeed built with "
                               "DS_BUILD_CPU_ADAM=1")
    report.add("GPU memory per process (estimate; the formula: revlib/lab/gpu_memory.py)", lines)


def _check_packages(exp: Experiment, machine: Machine, report: Report) -> None:
    needs = packages_needed(exp)
    if not needs:
        return
    lines = []
    for package in dict.fromkeys(n.what for n in needs):
        version = machine.packages.get(package)
        required = [n.why for n in needs if n.what == package and n.required]
        optional = [n.why for n in needs if n.what == package and not n.required]
        why = "; ".join(required + [f"{w} (optional)" for w in optional])
        lines.append(f"{package}: {version or 'not installed (or does not import)'} ({why})")
        if version is None and required:
            report.problems.append(f"{package} is not installed (or does not import); {'; '.join(required)} needs "
                                   "it (`pip install -c requirements.lock -e \".[gpu]\"`, README: Installing on a GPU "
                                   "machine)")
    report.add("Packages", lines)


def _check_keys(exp: Experiment, machine: Machine, report: Report) -> None:
    keys = api_keys(exp)
    gated = gated_sets(exp)
    if not keys and not gated:
        return
    lines = []
    for name, why in keys:
        is_set = name in machine.env_set
        lines.append(f"{name}: {'set' if is_set else 'unset'} ({why})")
        if not is_set:
            report.problems.append(f"{name} is unset; {why} reads the key from it")
    if gated:
        lines.append(f"Hub token ({' or '.join(HF_TOKEN_ENVS)}, or `huggingface-cli login`): "
                     f"{'set' if machine.hub_token else 'unset'} (05_benchmarks: {', '.join(gated)} is gated on the Hub)")
        if not machine.hub_token:
            report.problems.append(f"no Hub token: {', '.join(gated)} is gated on the Hub (accept its terms there, then "
                                   f"set HF_TOKEN), or give benchmarks.local_paths")
    report.add("API keys (set or not; values are never read into this report)", lines)


def _check_hub(exp: Experiment, machine: Machine, report: Report) -> None:
    downloads = hub_downloads(exp)
    if not downloads:
        return
    lines = [f"{d.what} ({d.why}){': in the local Hub cache' if d.what in machine.hub_cached else ''}" for d in downloads]
    missing = [d.what for d in downloads if d.what not in machine.hub_cached]
    if machine.hub_offline:
        lines.append("HF_HUB_OFFLINE=1")
        if missing:
            report.problems.append(f"HF_HUB_OFFLINE=1 (scripts/env.sh exports it unless it is set) and "
                                   f"{', '.join(missing)} are not in the local Hub cache: run with HF_HUB_OFFLINE=0 "
                                   "(`export HF_HUB_OFFLINE=0` before sourcing scripts/env.sh, which keeps a value you "
                                   "set), or download them first (`huggingface-cli download ID`, `--repo-type dataset` "
                                   "for a data set), or give local copies (base_models source local, data.source.path, "
                                   "benchmarks.local_paths)")
    elif machine.hub_reachable is False and missing:
        report.problems.append(f"the Hub did not answer within 3 s and {', '.join(missing)} are not in the local Hub "
                               "cache: check the network or HF_ENDPOINT, or download them where the Hub is reachable")
    else:
        lines.append("the Hub answers" if machine.hub_reachable else "every download is in the local Hub cache")
    report.add("Hub downloads", lines)


def _check_disk(exp: Experiment, machine: Machine, report: Report) -> None:
    estimate_lines = hardware.disk_estimate(exp)
    total = getattr(estimate_lines, "total_bytes", None)
    where = _existing_ancestor(exp.run_root)
    lines = [*estimate_lines, f"free under {where}: {machine.disk_free_gb:,.0f} GB"]
    if total is not None and total > machine.disk_free_gb * GB:
        report.problems.append(f"the plan writes about {total / GB:,.0f} GB under {exp.run_root}; {where} has "
                               f"{machine.disk_free_gb:,.0f} GB free (keep_optimizer_states: last, fewer "
                               "save_every_epochs, or another output_dir)")
    report.add("Disk", lines)


__all__ = ["Machine", "Launch", "Memory", "CellMemory", "Report", "probe", "check", "estimate", "read_launch",
           "training_memory", "packages_needed", "api_keys", "hub_downloads", "largest_layer"]
