"""A set of malformed params files a new user might write: each gives exit 2, names its fault, and shows no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from revlib.lab.cli import app

HERE = Path(__file__).parent / "params_malformed"
runner = CliRunner()

# file -> fragments the message must contain (the YAML path where there is one, and the fault)
FAULTS = {
    "m01_tab_indent.yaml": ["not valid YAML", "'\\t' that cannot start any token", "line 3"],
    "m02_list_at_top.yaml": ["must hold a mapping of keys to values"],
    "m03_scalar_at_top.yaml": ["must hold a mapping of keys to values"],
    "m04_missing_experiment.yaml": ["experiment: required field missing"],
    "m05_bad_experiment_name.yaml": ["experiment: String should match pattern", "'my exp/1'"],
    "m06_no_base_models.yaml": ["base_models: List should have at least 1 item"],
    "m07_duplicate_model_names.yaml": ["base_models: names must be unique"],
    "m08_unknown_stage.yaml": ["stages[1]", "'09_magic'"],
    "m09_hub_without_id.yaml": ["base_models[0]: source 'hub' needs 'id'"],
    "m10_local_without_path.yaml": ["base_models[0]: source 'local' needs 'path'"],
    "m11_negative_seed.yaml": ["seed: Input should be greater than or equal to 0", "(got -1)"],
    "m12_nan_learning_rate.yaml": ["sft.lr: Input should be a finite number"],
    "m13_zero_batch_size.yaml": ["sft.batch_size: Input should be greater than or equal to 1"],
    "m14_warmup_ratio_one.yaml": ["sft.warmup_ratio: Input should be less than 1"],
    "m15_dpo_on_untrained_set.yaml": ["dpo.on: ['mix'] not among sft.train_sets ['forward']"],
    "m16_prompt_longer_than_row.yaml": ["dpo: max_prompt_length (256) must be below max_length (128)"],
    "m17_min_above_max_reasoning.yaml": ["data: min_reasoning_chars must not exceed max_reasoning_chars"],
    "m18_judge_with_oracle.yaml": ["data: free_text_check 'judge' needs a model teacher"],
    "m19_r1k_with_api_teacher.yaml": ["data: an r1k source already holds its reverse twins"],
    "m20_r1k_two_locations.yaml": ["data.source: r1k source: give exactly one of 'dataset'"],
    "m21_key_instead_of_env_name.yaml": ["data.teacher.api_key_env: String should match pattern"],
    "m22_zero_timeout.yaml": ["data.teacher.timeout_s: Input should be greater than 0"],
    "m23_unknown_benchmark.yaml": ["benchmarks.tasks[0]", "(got 'mmlu')"],
    "m24_local_path_for_unused_benchmark.yaml": ["benchmarks: local_paths: ['math500'] are not among tasks"],
    "m25_samples_with_greedy.yaml": ["benchmarks: samples > 1 with temperature 0"],
    "m26_probe_save_after_last_epoch.yaml": ["probes: sft_save_every (4) exceeds sft_epochs (2)"],
    "m27_negatives_without_sft.yaml": ["negatives: methods must include sft"],
    "m28_star_starts_by_epoch.yaml": ["star_graph.under_epochs: unknown key", "star_graph.over_epochs: unknown key"],
    "m29_duplicate_key_in_list_item.yaml": ["duplicate key 'preset'", "first on line 5, again on line 6"],
    "m30_dpo_zero_max_steps.yaml": ["dpo.max_steps: must be at least 1, or -1", "(got 0)"],
    "m31_lora_targets_of_another_architecture.yaml": [
        "sft.lora.target_modules: ['c_attn', 'c_proj'] match no module of base model 'ckpt'", "q_proj"],
    "m32_utf16_file.yaml": ["not UTF-8 text (byte 0xff at offset 0)"],
    "m33_repeated_data_sizes.yaml": ["negatives: data_sizes must be distinct positive counts"],
    "m34_string_for_list.yaml": ["stages: Input should be a valid list"],
    "m35_star_graph_pool_too_small.yaml": ["star_graph: 600 distinct star_graph problems needed"],
    "m36_api_teacher_without_model.yaml": ["data.teacher.model: required field missing"],
    "m37_negative_pool_too_small.yaml": ["negatives: 300 distinct arith problems needed"],
    "m44_negatives_old_dpo_epochs.yaml": ["dpo_epochs is now dpo_passes", "held_out_pairs no longer chooses the DPO pass"],
    "m45_negatives_old_under_fraction.yaml": ["under_fraction is now under_validation_share"],
    "m38_unknown_dtype.yaml": ["base_models[0].dtype", "(got 'float8')"],
    "m39_only_comments.yaml": ["the params file is empty"],
    "m40_base_url_without_scheme.yaml": ["data.teacher.base_url: String should match pattern", "api.deepseek.com/v1"],
    "m41_empty_lora_targets.yaml": ["sft.lora.target_modules: empty"],
    "m42_judge_without_model.yaml": ["benchmarks.judge.model: String should have at least 1 character"],
    "m43_star_graph_dpo_without_step_budget.yaml": [
        "dpo.max_steps: 07's per-step DPO runs a fixed step budget; set dpo.max_steps and dpo.save_every_steps"],
    "m46_dpo_variant_typo.yaml": ["dpo.variants.authors-code.betta: unknown key; did you mean 'beta'?"],
    "m47_dpo_variant_on_untrained_sft.yaml": ["variants.authors-code.on ['mix'] must be among dpo.on ['forward']"],
    "m48_dpo_variant_bad_name.yaml": ["variants: 'Authors_Code' is not a variant name"],
    "m49_dpo_variant_prompt_longer_than_row.yaml": [
        "variants.short: max_prompt_length (256) must be below max_length (128)"],
    "m50_dpo_variant_zero_max_steps.yaml": ["dpo.variants.authors-code.max_steps: must be at least 1, or -1", "(got 0)"],
    "m70_authors_measure_bad_checkpoints.yaml": ["probes.authors_measure_checkpoints: Input should be 'all' or 'ends'",
                                                 "(got 'last')"],
    "m71_authors_measure_cap_below_two.yaml": ["probes.authors_measure_max_tokens: Input should be greater than or "
                                               "equal to 2", "(got 1)"],
    "m60_negatives_teacher_form_the_task_lacks.yaml": [
        "negatives.teacher_forms: task 'arith' writes no form ['shouted']", "'result_first'"],
    "m61_negatives_old_kept_skill_drop.yaml": ["kept_skill_drop is now learning.kept_skill_drop"],
    "m62_learning_rule_out_of_range.yaml": ["learning.dpo_loss_fall: Input should be less than or equal to 1",
                                            "learning.kept_skil_drop: unknown key; did you mean 'kept_skill_drop'?"],
}


def test_every_malformed_file_is_listed():
    assert {p.name for p in HERE.glob("*.yaml")} == set(FAULTS)
    assert len(FAULTS) >= 30


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_malformed_params_exit_2_naming_the_fault(name):
    result = runner.invoke(app, ["check", str(HERE / name)])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not a crash caught by the runner
    assert "Traceback" not in result.output
    text = " ".join(result.output.split())
    for fragment in FAULTS[name]:
        assert fragment in text, f"{fragment!r} not in:\n{result.output}"


def test_the_command_itself_prints_no_traceback():
    """Through the real entry point, for the inputs that used to crash: a non-UTF-8 file and a directory."""
    for target in (HERE / "m32_utf16_file.yaml", HERE / "qwen2_checkpoint"):
        out = subprocess.run([sys.executable, "-m", "revlib.lab.cli", "check", str(target)], capture_output=True, text=True)
        assert out.returncode == 2, out.stdout + out.stderr
        assert "Traceback" not in out.stdout + out.stderr
        assert ("not UTF-8" if target.suffix else "is a directory") in out.stdout + out.stderr
