"""Entry point for `accelerate launch -m revlib.modeling.launch <job.json>`: one training process of a launched job.

`revlib.modeling.train.sft/dpo` write the job file and start this through accelerate (DDP or DeepSpeed
ZeRO-3 from configs/); each process runs the same in-process trainer, which accelerate shards.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: accelerate launch -m revlib.modeling.launch <job.json>", file=sys.stderr)
        return 2
    from revlib.modeling import train

    os.environ[train.LAUNCHED_ENV] = "1"  # the job's params name accelerate; do not launch again
    result = train.run_job(argv[0])
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"revlib.modeling.launch: {len(result.checkpoints)} checkpoint(s); final {result.final.path}")
    _close_process_group()
    return 0


def _close_process_group() -> None:
    """Leave the process group together: a rank that exits while gloo's threads still run can abort
    ("terminate called without an active exception", seen once in 2-process CPU SFT after training finished)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
