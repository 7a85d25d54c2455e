#!/usr/bin/env bash
# Runs the test suite (slow and gpu tiers deselected; see pyproject.toml markers).
# In an active conda env or venv that already has revlib installed (a GPU machine's environment.yml env, with the
# gpu extra), the tests run there, so `bash scripts/test.sh -m gpu` sees vLLM and flash-attn; otherwise .venv is
# built (or reused) by scripts/env.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if { [ -n "${CONDA_PREFIX:-}" ] || { [ -n "${VIRTUAL_ENV:-}" ] && [ "${VIRTUAL_ENV}" != "$(pwd -P)/.venv" ]; }; } && python -c "import revlib" 2>/dev/null \
   && [ "$(python -c 'import revlib, pathlib; print(pathlib.Path(revlib.__file__).resolve().parent.parent)')" = "$(pwd -P)" ]; then
  echo "scripts/test.sh: the active environment ($(python -c 'import sys; print(sys.prefix)'))"
  export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" PYDEVD_DISABLE_FILE_VALIDATION=1
else
  source scripts/env.sh
fi
python -m pytest "$@"
