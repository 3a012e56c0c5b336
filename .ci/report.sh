#!/usr/bin/env bash
# CI output: profile the demo recipe on `local` and on the emulated aarch64 device, and keep the
# Markdown/HTML/JSON report in reports/ (the emulated device's timings are labelled, not latency).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=reports
mkdir -p "$OUT"
INV="$OUT/ci-devices.toml"
: > "$INV"
$BIN/edgeslm profile minilm-embedding-int8 --device local --iters 100 -o build
$BIN/edgeslm devices emulate start ci-pi4 --add-to "$INV"
trap '$BIN/edgeslm devices emulate stop ci-pi4 || true' EXIT
$BIN/edgeslm profile minilm-embedding-int8 --device ci-pi4 --devices "$INV" --iters 3 --warmup 1 -o build
for fmt in md html json; do
  $BIN/edgeslm report build/minilm-embedding-int8 --format "$fmt" --out "$OUT/report.$fmt"
done
echo "CI report: $OUT/report.md, $OUT/report.html"
cat "$OUT/report.md"
