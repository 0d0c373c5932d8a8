#!/usr/bin/env bash
# Runs HERE (no GPU): builds the `cuda` binary and lays out .device/ (git-ignored) for a device call:
#   bash tools/prepare_device.sh
# then, with the device tool: command `bash tools/device_bench.sh`, carry [".device"].
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
bash "$SHARED/gpu/setup-nvcc.sh"
source ~/.cache/gapprobe-cuda13/link/env.sh
export PATH="$PWD/.tools/cmake-venv/bin:$PATH"
T=${CARGO_TARGET_DIR:-target-cuda}
CARGO_TARGET_DIR=$T cargo build --release --locked --features cuda --bin gapprobe
CARGO_TARGET_DIR=$T cargo build --release --locked --features cuda -p gapprobe-probes --example bench_probe
mkdir -p .device
strip -o .device/gapprobe "$T/release/gapprobe"
strip -o .device/bench_probe "$T/release/examples/bench_probe"
xz -6 -f -T2 .device/gapprobe .device/bench_probe
cp "$SHARED/gpu/device-libs.sh" "$SHARED/anchors/torch_baseline.py" .device/
ls -la .device
