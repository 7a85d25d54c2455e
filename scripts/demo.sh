#!/usr/bin/env bash
# Runs the demo experiment end to end (params/demo.yaml) and prints where its report is.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
revlib run params/demo.yaml --jobs 2 "$@"
