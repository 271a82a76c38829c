#!/usr/bin/env bash
# Runs every matrix of configs/paper/ into docs/results/<matrix>/ (finished runs are kept, so
# an interrupted regeneration continues), then rebuilds docs/results/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
for config in configs/paper/*.yaml; do
  grep -q '^axes:' "$config" || continue  # base experiments, not matrices
  name=$(basename "$config" .yaml)
  fedsec matrix "$config" --out "docs/results/$name" --jobs "${JOBS:-2}"
done
python -m fedsec.matrix.index docs/results
