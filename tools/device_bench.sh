#!/usr/bin/env bash
# Runs ON THE GPU MACHINE, from the repo root, with the prepared folder .device/ carried:
#   .device/gapprobe.xz        the `--features cuda` binary, xz-compressed (tools/prepare_device.sh)
#   .device/device-libs.sh     ../shared/gpu/device-libs.sh
#   .device/torch_baseline.py  ../shared/anchors/torch_baseline.py
# PyTorch (same call, same GPU) and gapprobe are measured one after the other; tools/ratio_table.py
# prints the ratios. Results land in $OUT (torch JSON, gapprobe stdout, the ratio table).
set -uo pipefail
OUT=${OUT:-/tmp/gapprobe-device}
mkdir -p "$OUT"
BATCHES=${BATCHES:-64,256}
DTYPES=${DTYPES:-bf16}
E2E=${E2E:-2048}
python3 - <<'PY' > /tmp/gapprobe || exit 1
import lzma, sys
sys.stdout.buffer.write(lzma.open(".device/gapprobe.xz").read())
PY
chmod +x /tmp/gapprobe
source .device/device-libs.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
TORCH_SECTIONS=${TORCH_SECTIONS:-encoder,pipeline}
echo "== PyTorch anchor ($TORCH_SECTIONS) =="
timeout ${TORCH_TIMEOUT:-300} python3 .device/torch_baseline.py --sections "$TORCH_SECTIONS" --probe-backends torch --dtypes "$DTYPES" \
  --batch-sizes "$BATCHES" --iters 10 --warmup 3 --num-jpegs "$E2E" --epochs 2 --out "$OUT" ${TORCH_EXTRA:-} 2>&1 | tee "$OUT/torch.log" | grep -E "^\[|ips|img/s|images/s" | tail -40
# Probe solver on the GPU (issue 7; PROBE=0 skips it), when the `cuda` bench_probe example was carried; run right
# after the default bench, so that a call cut short by its time limit still has both issues' figures.
probe_section() {
  if [ "${PROBE:-1}" = 1 ] && [ -f .device/bench_probe.xz ]; then
    echo "== gapprobe probe solver (candle, CUDA) on the anchor's CUB-shaped data =="
    python3 -c 'import lzma,sys; sys.stdout.buffer.write(lzma.open(".device/bench_probe.xz").read())' > /tmp/bench_probe
    chmod +x /tmp/bench_probe
    # scikit-learn on 2 pinned cores in the same run (issue 7's ratio), when it is installed there.
    SK="--skip-sklearn"
    python3 -c 'import sklearn, threadpoolctl' 2>/dev/null && SK="--sklearn-cpus 0,1"
    timeout 300 python3 tools/probe_bench.py --bin /tmp/bench_probe $SK --device auto --repeat 2 \
      --json "$OUT/probe_bench.json" 2>&1 | tee "$OUT/probe_bench.txt"
    echo "== the same with the solver's state on the host (GAPPROBE_PROBE_RESIDENT=0: the previous CUDA path) =="
    GAPPROBE_PROBE_RESIDENT=0 timeout 200 python3 tools/probe_bench.py --bin /tmp/bench_probe --skip-sklearn \
      --device auto --repeat 1 --json "$OUT/probe_bench_host.json" 2>&1 | tee -a "$OUT/probe_bench.txt"
    echo "== resident again, with CUDA's default memory pool (GAPPROBE_POOL_RETAIN=0: freed memory released at each sync) =="
    GAPPROBE_POOL_RETAIN=0 timeout 120 python3 tools/probe_bench.py --bin /tmp/bench_probe --skip-sklearn \
      --device auto --repeat 1 --json "$OUT/probe_bench_nokeep.json" 2>&1 | tee -a "$OUT/probe_bench.txt"
    grep -E "^\[probe\]|torch-cuda" "$OUT/torch.log" | tail -8
  fi
}
# The kernel checks first, in processes of their own: a kernel that faults leaves its process's
# CUDA context unusable, and should cost neither the default bench's figures nor the variants'
# time. All kernels in one process (120 s: the first process also JIT-compiles the PTX); if that
# fails, each attention kernel not yet measured alone (60 s each, so a kernel that hangs costs a
# minute), and those that fail (fault, hang or error past tolerance) are left out of what follows.
ALL_ATT="mma mma8 wmma fa fa128 fa8 fa_skip fa32 wg"  # AttentionKernel::ALL's names (attention.rs)
BAD_ATT=""
echo "== kernel checks (gapprobe bench --checks-only) =="
if timeout 120 /tmp/gapprobe bench --device cuda --checks-only > "$OUT/kernel_checks.txt" 2>&1; then
  grep -E "against|passed" "$OUT/kernel_checks.txt"
else
  grep -E "FAILED|against|rror" "$OUT/kernel_checks.txt" | head -20
  # Each run also checks the kernels other than attention: a new kernel is judged only if the
  # run with the measured default `fa` alone passes.
  if timeout 60 /tmp/gapprobe bench --device cuda --checks-only --attention-kernels fa \
      > "$OUT/kernel_checks_fa.txt" 2>&1; then
    for k in wg fa32 fa_skip; do
      if ! timeout 60 /tmp/gapprobe bench --device cuda --checks-only --attention-kernels "$k" \
          > "$OUT/kernel_checks_$k.txt" 2>&1; then
        BAD_ATT="$BAD_ATT $k"
        echo "attention kernel $k failed its check alone: left out of the bench and the variants"
        grep -E "FAILED|rror" "$OUT/kernel_checks_$k.txt" | head -5
      fi
    done
  else
    echo "the checks fail with fa alone too: the failure is not a new attention kernel's (see above)"
  fi
fi
ATT_FLAG=""
if [ -n "$BAD_ATT" ]; then
  keep=""
  for k in $ALL_ATT; do case " $BAD_ATT " in *" $k "*) ;; *) keep="$keep,$k" ;; esac; done
  ATT_FLAG="--attention-kernels ${keep#,}"
fi
echo "== gapprobe bench =="
OPS_FLAG=""; [ "${OPS:-1}" = 1 ] && OPS_FLAG="--ops"
# --stages: one batch with the device synchronised after each stage, so the batch time splits by
# name (STAGES=0 leaves it out, here and in the variants).
STAGES_FLAG=""; [ "${STAGES:-1}" = 1 ] && STAGES_FLAG="--stages"
# Not quiet: extraction logs how long it waited for decoded images vs. the device's work.
timeout 240 /tmp/gapprobe bench --device cuda --dtypes "$DTYPES" --batch-sizes "$BATCHES" --iters 10 --warmup 3 \
  --e2e-images "$E2E" --e2e-batch 256 --preprocess-images "$E2E" $OPS_FLAG $STAGES_FLAG $ATT_FLAG 2>&1 | tee "$OUT/gapprobe_bench.txt"
probe_section
# Variants of the default build, NAME:VAR=VALUE[,VAR=VALUE]: each a row of the ratio table
# (gapprobe_bench_NAME.txt); those in E2E_VARIANTS also end to end. The defaults they vary
# (docs/performance.md): the bias-folding attention kernel (GAPPROBE_ATTENTION=fa; mma, mma8,
# fa128, fa8 and wmma are the others, all timed per op by `--ops` above), biases and residual adds
# in the GEMMs' cuBLASLt epilogue (GAPPROBE_GEMM_EPILOGUE=0 turns it off), an f32 residual stream
# around bf16 layers (GAPPROBE_RESIDUAL=model keeps it in bf16), freed memory kept in CUDA's pool
# (GAPPROBE_POOL_RETAIN=0), uploads through a pinned buffer (GAPPROBE_PINNED=0) and decoding on
# every core but two (GAPPROBE_DECODE_THREADS=N). `meank`: `.mean` pooling by the token-mean
# kernel (GAPPROBE_MEAN_KERNEL=1). `addnorm`: each residual add and the LayerNorm after it in one
# pass over the f32 stream (GAPPROBE_ADD_NORM=1); `fastact`: quick_gelu through the fast
# intrinsics (GAPPROBE_FAST_ACT=1); `new`: the three together. `f16stream`: the residual stream in
# float16 around bf16 layers (GAPPROBE_RESIDUAL=f16: the bf16 stream's bytes, 8.07e-3 error on the
# CPU against 7.91e-3 for f32); `f16new`: that with the other three. `faskip`: the fa attention
# kernel skipping the empty key blocks of its last tile and the warps with no valid query
# (GAPPROBE_ATTENTION=fa_skip, the same numbers: the default bench prints `FlashSkip against
# Flash: 0 of … values differ`). `fa32`: fa_skip with 32 queries per warp, two row tiles sharing
# each K/V fragment read from shared memory (GAPPROBE_ATTENTION=fa32, the same numbers again:
# `Flash32 against Flash: 0 of …`); `f16fa32`: f16new with it. `wg`: fa_skip's arithmetic with
# Hopper's wgmma products (GAPPROBE_ATTENTION=wg, compute capability 9.0 only; `Warpgroup against
# Flash` counts the values that differ, the check's error decides); `f16wg`: f16new with it.
# All are off by default until measured; the kernel checks above compare each kernel with its
# CPU reference, so the variants skip them (--skip-checks; each still prints its dtype's error
# against the f32 model). The likeliest new defaults run first: a call cut off by its time
# limit still brings back each finished variant's gapprobe_bench_NAME.txt, and
# `python3 tools/ratio_table.py DIR` makes the table from them afterwards.
for v in ${VARIANTS:-f16wg:GAPPROBE_RESIDUAL=f16,GAPPROBE_ADD_NORM=1,GAPPROBE_FAST_ACT=1,GAPPROBE_MEAN_KERNEL=1,GAPPROBE_ATTENTION=wg wg:GAPPROBE_ATTENTION=wg f16fa32:GAPPROBE_RESIDUAL=f16,GAPPROBE_ADD_NORM=1,GAPPROBE_FAST_ACT=1,GAPPROBE_MEAN_KERNEL=1,GAPPROBE_ATTENTION=fa32 f16new:GAPPROBE_RESIDUAL=f16,GAPPROBE_ADD_NORM=1,GAPPROBE_FAST_ACT=1,GAPPROBE_MEAN_KERNEL=1 fa32:GAPPROBE_ATTENTION=fa32 faskip:GAPPROBE_ATTENTION=fa_skip f16stream:GAPPROBE_RESIDUAL=f16 new:GAPPROBE_ADD_NORM=1,GAPPROBE_FAST_ACT=1,GAPPROBE_MEAN_KERNEL=1 addnorm:GAPPROBE_ADD_NORM=1 fastact:GAPPROBE_FAST_ACT=1 meank:GAPPROBE_MEAN_KERNEL=1 bf16stream:GAPPROBE_RESIDUAL=model}; do
  name=${v%%:*}
  att=$(echo "${v#*:}" | tr , '\n' | sed -n 's/^GAPPROBE_ATTENTION=//p')
  if [ -n "$att" ]; then
    case " $BAD_ATT " in *" $att "*) echo "== variant $name skipped: attention kernel $att failed its check =="; continue ;; esac
  fi
  E2E_FLAGS=""
  case " ${E2E_VARIANTS:-new f16new f16fa32 f16wg meank} " in *" $name "*) E2E_FLAGS="--e2e-images $E2E --e2e-batch 256" ;; esac
  echo "== gapprobe bench, variant $name (${v#*:}) =="
  env $(echo "${v#*:}" | tr , ' ') timeout 150 /tmp/gapprobe bench --device cuda --dtypes "$DTYPES" --batch-sizes 256 \
    --iters 10 --warmup 3 --skip-checks $E2E_FLAGS $STAGES_FLAG 2>&1 | grep -E "^(encoder|e2e-jpeg|check|pool|stage|upload)|rror|INFO extracted 2048" | tee "$OUT/gapprobe_bench_$name.txt"
done
if [ "${SMOKE_EXTRACT:-1}" = 1 ]; then
  echo "== extract on CUDA with --batch-size auto (the demo's model and images) =="
  timeout 120 /tmp/gapprobe -q demo --out /tmp/gp-demo > /dev/null 2>&1
  timeout 120 /tmp/gapprobe extract --model /tmp/gp-demo/model --dataset demo:/tmp/gp-demo/data \
    -f 'vision.layer[-2].patch.mean' -f projector.mean --device cuda --dtype bf16 --cache /tmp/gp-cache 2>&1 \
    | grep -E "batch size|extracted|error" | tee "$OUT/extract_auto.txt"
  echo "== token points on CUDA (hundreds of MB a batch: the closing line says how long the GPU waited for the cache writer) =="
  timeout 120 /tmp/gapprobe extract --model /tmp/gp-demo/model --dataset demo:/tmp/gp-demo/data \
    -f 'vision.layer[-2].all.none' -f projector.none --device cuda --dtype bf16 --cache /tmp/gp-cache 2>&1 \
    | grep -E "batch size|extracted|error" | tee "$OUT/extract_tokens.txt"
  echo "== the language model's two arms on CUDA (the demo's 2-layer decoder, bf16, --batch-size auto sized with the decoder) =="
  timeout 120 /tmp/gapprobe extract --model /tmp/gp-demo/model --dataset demo:/tmp/gp-demo/data \
    -f 'llm.image.layer[-1].last' -f 'llm.text.layer[-1].last' --device cuda --dtype bf16 \
    --cache /tmp/gp-cache 2>&1 | grep -E "batch size|extracted|cached|rror" | tee "$OUT/extract_llm.txt"
  echo "== zero-shot answers on CUDA (KV-cached greedy decoding): f32 on CUDA against f32 on the CPU, then bf16 =="
  for d in cpu cuda; do
    timeout 120 /tmp/gapprobe -q zero-shot --model /tmp/gp-demo/model --dataset demo:/tmp/gp-demo/data \
      --arms image,text --limit 32 --max-new-tokens 8 --device $d --dtype f32 --out /tmp/gp-zs-$d 2>&1 \
      | tail -n 8 | tee "$OUT/zero_shot_$d.txt"
  done
  python3 -c 'import json,sys; a,b=[[json.loads(l)["output"] for l in open(f"/tmp/gp-zs-{d}/answers.jsonl")] for d in ("cpu","cuda")]; print(f"zero-shot f32 answers identical on CPU and CUDA: {sum(x==y for x,y in zip(a,b))} of {len(a)}")' \
    | tee -a "$OUT/zero_shot_cuda.txt"
  timeout 120 /tmp/gapprobe -q zero-shot --model /tmp/gp-demo/model --dataset demo:/tmp/gp-demo/data \
    --arms image,text --limit 256 --batch-size 64 --device cuda --dtype bf16 --out /tmp/gp-zs-bf16 2>&1 \
    | tail -n 8 | tee "$OUT/zero_shot_bf16.txt"
fi
if [ "${AB_OFF:-0}" = 1 ]; then
  echo "== gapprobe bench, fused kernels off (candle's composite ops): the A/B for features/kernels/fused.cu =="
  GAPPROBE_KERNELS=off timeout 120 /tmp/gapprobe -q bench --device cuda --dtypes "$DTYPES" --batch-sizes "$BATCHES" --iters 5 --warmup 2 \
    2>&1 | tee "$OUT/gapprobe_bench_kernels_off.txt"
fi
if [ "${TORCH_BF16_ERR:-1}" = 1 ]; then
  echo "== PyTorch's own bf16 error (yardstick for gapprobe's 'relative error ... vs f32' lines) =="
  timeout 150 python3 tools/torch_bf16_error.py --anchor .device/torch_baseline.py --f32-residual 2>&1 | tail -2 | tee "$OUT/torch_bf16_error.txt"
fi
python3 tools/ratio_table.py "$OUT" | tee "$OUT/ratios.md"
