#!/usr/bin/env bash
# The main job end to end: train the seed's conv and involution classifiers on real (offline) data,
# convert both to int8 TFLite with the op audit, benchmark them, and write the deployment report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"   # the project's own environment (scripts/setup.sh made it)
export VK_ICD_FILENAMES=${VK_ICD_FILENAMES:-/usr/lib/chromium/vk_swiftshader_icd.json}
OUT=${OUT:-runs/demo}
mkdir -p "$OUT"
invo-train --model seed-involution --compare --dataset digits --epochs "${EPOCHS:-30}" --out "$OUT/train" --force
for m in seed-involution seed-conv; do
  invo-convert "$OUT/train/$m/model.keras" -o "$OUT/$m-int8.tflite" --quantize int8 --calib digits \
    --report "$OUT/$m-int8.json" --force
done
invo-bench "$OUT/seed-involution-int8.tflite" "$OUT/seed-conv-int8.tflite" --num_threads 1 --num_runs 200 \
  --json "$OUT/bench.json"
invo-report deployment --train-dir "$OUT/train" --out "$OUT/report"
echo "main job done: everything is in $OUT"
