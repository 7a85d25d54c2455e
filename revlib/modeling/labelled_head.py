"""trl's fused LM head, scoring only the positions that carry a label on every device.

trl 1.16's SFT and DPO trainers project the hidden states through the LM head in tiles
(`trl.trainer.utils.add_fused_lm_head`). On CUDA it takes only the positions whose next-token label is
not -100; elsewhere it scores every position, so that compiled backends (Neuron) see one tile shape.
Eager CPU training has no compilation, so it pays for the prompt and the padding: with SmolLM2's
49k-token vocabulary the head is the size of seven decoder layers, and a prompt-heavy r1k batch spends
most of it on positions whose scores are thrown away. `labelled_positions_only` keeps trl's own kernel
(the torch tiles off Triton) and asks it for the compact selection; the kept positions' numbers are the
same, the others were zeros either way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from unittest import mock

import torch
import trl.trainer.utils as trl_utils

# trl's own test of whether a device scores the labelled positions only (its kernel module keeps the original)
_TRL_COMPACT = trl_utils._use_triton


def _compact(device: torch.device) -> bool:
    return device.type == "cpu" or _TRL_COMPACT(device)


@contextlib.contextmanager
def labelled_positions_only(on: bool = True) -> Iterator[None]:
    """Within the block, trl's fused head on CPU scores the labelled positions only (`on=False`: trl's default)."""
    if not on:
        yield
        return
    with mock.patch.object(trl_utils, "_use_triton", _compact):
        yield
