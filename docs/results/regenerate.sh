#!/usr/bin/env bash
# Runs every matrix of configs/paper/ into docs/results/<matrix>/, then the all-against-all
# table of configs/sok.yaml into docs/results/sok/ (finished runs are kept, so an interrupted
# regeneration continues), then rebuilds docs/results/README.md. Several hours on 2 cores, as
# measured here: the logistic-regression matrices about 40 minutes and the all-against-all
# table about two hours (each beside other jobs); Exp6's CNN and bi-LSTM ran 12 of their 60 runs in 33
# minutes beside another sweep; the Fashion-MNIST matrices ran about 4.4 runs a minute with
# --jobs 2 (their 315 runs about 70 minutes); the language-model matrices take longer still.
set -euo pipefail
cd "$(dirname "$0")/../.."
matrices=()
for config in configs/paper/*.yaml configs/sok.yaml; do
  grep -qE '^(axes|extends):' "$config" && matrices+=("$config")  # not the base experiments
done
for config in "${matrices[@]}"; do
  fedsec matrix "$config" --out "docs/results/$(basename "$config" .yaml)" --jobs "${JOBS:-2}"
done
python -m fedsec.matrix.index docs/results "${matrices[@]}"
