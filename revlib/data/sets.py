"""Notebook 01's set files: the names of the r1k sets and pairs, and where a data run directory keeps them.

Every later stage reads sets through here, without the teachers and sources that built them.
"""

from __future__ import annotations

from pathlib import Path

from revlib.core.records import PreferencePair, Record, read_pairs, read_records

TRAIN_SETS = ("forward", "reverse", "half_mix", "mix")
TEST_SETS = ("test_forward", "test_reverse", "test_mix")
PROBE_SETS = ("probe_forward", "probe_reverse", "probe_mix", "probe_test_forward", "probe_test_reverse", "probe_test_mix")
PAIR_SETS = TRAIN_SETS + ("probe_forward", "probe_reverse", "probe_mix")


def set_path(data_dir: Path, name: str) -> Path:
    return Path(data_dir) / "sets" / f"{name}.jsonl"


def pairs_path(data_dir: Path, name: str) -> Path:
    return Path(data_dir) / "pairs" / f"{name}.jsonl"


def load_set(data_dir: Path, name: str) -> list[Record]:
    return read_records(set_path(data_dir, name))


def load_pairs(data_dir: Path, name: str) -> list[PreferencePair]:
    return read_pairs(pairs_path(data_dir, name))
