#!/usr/bin/env bash
# Runs every matrix of configs/paper/ into docs/results/<matrix>/, then the all-against-all
# table of configs/sok.yaml into docs/results/sok/ (finished runs are kept, so an interrupted
# regeneration continues), then rebuilds docs/results/README.md. About 2.5 hours on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
for config in configs/paper/*.yaml configs/sok.yaml; do
  grep -qE '^(axes|extends):' "$config" || continue  # base experiments, not matrices
  name=$(basename "$config" .yaml)
  fedsec matrix "$config" --out "docs/results/$name" --jobs "${JOBS:-2}"
done
python -m fedsec.matrix.index docs/results
