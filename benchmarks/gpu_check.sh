#!/usr/bin/env bash
# Every GPU check of training (and the embedding hook) on one device, in under 5 minutes.
#
#   bash benchmarks/gpu_check.sh --fetch-wheels   # here, with network: wheels the device lacks -> .whl/
#   bash benchmarks/gpu_check.sh --cpu            # dry run of every step on this machine's CPU
#   bash benchmarks/gpu_check.sh                  # on the device (carry .whl), figures -> $OUT or benchmarks/out/
#
# The device has Python 3.12 with torch, torchvision, timm, pyarrow, pillow, typer, rich and safetensors
# but no network: the project installs from the working tree with `pip install --no-deps
# --no-build-isolation -e .`, the missing wheels from .whl/ (see /work/.library/device/README.md:
# name `.whl` in the run's carry). Checks: (1) a synthetic world, prepared shards; (2) single-GPU
# training in bf16 autocast with streamed data, pinned memory and 2 loader workers; (3) the same
# under torchrun (nccl, SyncBatchNorm on a ResNet tower), then gradient checkpointing and torch.compile; (4) the step cost against a plain open_clip
# step, ViT-B-32 random init, batch 256 in bf16; (5) `embed` into parts, one process and torchrun;
# (6) embedding images/s against a plain loop on 640x480 JPEGs; (7) torch exact search == faiss.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS="open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 webdataset==1.0.2 braceexpand==0.1.7 isal==1.9.1 faiss-cpu==1.15.1 pyahocorasick==2.3.1"
MODE=gpu
case "${1:-}" in
  --cpu) MODE=cpu ;;
  --fetch-wheels)
    # keep them out of git: add the line /.whl/ to .git/info/exclude once
    # shellcheck disable=SC2086
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform any -d .whl $WHEELS
    du -sh .whl; exit 0 ;;
  "") ;;
  *) echo "usage: $0 [--cpu | --fetch-wheels]" >&2; exit 2 ;;
esac
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
WORK=$(mktemp -d /tmp/gpu-check-XXXX)
if [[ -n "${OUT:-}" ]]; then
  # the device returns at most 8 files from $OUT: the figures travel as one archive, written even
  # when the run stops early
  RESULTS="$WORK/results"
  trap 'tar -czf "$OUT/gpu_check.tgz" -C "$RESULTS" .' EXIT
else
  RESULTS=benchmarks/out/gpu_check
fi
mkdir -p "$RESULTS"
if [[ $MODE == gpu ]]; then
  PY=python3
  if compgen -G ".whl/*.whl" > /dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
  fi
  $PY -m pip install -q --no-deps --no-build-isolation -e . || export PYTHONPATH=$PWD:${PYTHONPATH:-}
  DEVICE=cuda; STEPS=150; BATCH=256; STEP_BATCH=256; WORKERS=2; SCENES=2048; MODEL=ViT-B-32
  EMB_IMAGES=2048; EMB_BATCH=256; EXACT_VECTORS=1000000
else
  PY=${PY:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || command -v python3)}
  DEVICE=cpu; STEPS=4; BATCH=16; STEP_BATCH=8; WORKERS=1; SCENES=256; MODEL=wit-tiny-vit  # a dry run: small
  EMB_IMAGES=32; EMB_BATCH=16; EXACT_VECTORS=20000
fi
$PY - <<EOF | tee "$RESULTS/env.txt"
import torch, sys
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
SECONDS=0
echo "== 1. synthetic world + prepared shards"
$PY - <<EOF
import sys; sys.path.insert(0, ".")
from tests.test_models_world import make_world, write_store
world = make_world("$WORK/root", entities=24, scenes={"train": $SCENES, "val": 64, "test": 128}, size=64)
write_store(world.store, world.root.images)
EOF
$PY -m wit_retrieval prepare baselines/inject-mini.toml --data "$WORK/root" > "$RESULTS/prepare.json"
echo "   ${SECONDS}s"
echo "== 2. one device: bf16 autocast, streamed data, pinned memory, $WORKERS loader workers"
common=(--data "$WORK/root" --set "optim.batch_size=$BATCH" --set "optim.steps=$STEPS" --set run.eval_every=0
        --set run.checkpoint_every=0 --set "data.workers=$WORKERS" --set run.log_every=10 --set run.threads=0)
$PY -m wit_retrieval train baselines/inject-mini.toml --out "$WORK/one" "${common[@]}" \
  --set model.base=open_clip:wit-tiny-vit:random > "$RESULTS/train_one.json"
cp "$WORK/one/train_log.jsonl" "$RESULTS/train_one_log.jsonl"
echo "   ${SECONDS}s"
echo "== 3. torchrun (nccl on GPU, gloo on CPU), ResNet tower: SyncBatchNorm on GPU"
$PY -m torch.distributed.run --standalone --nproc_per_node 1 -m wit_retrieval train baselines/inject-mini.toml \
  --out "$WORK/ddp" "${common[@]}" --set optim.steps=20 > "$RESULTS/train_torchrun.json"
$PY -m wit_retrieval evaluate --checkpoint "$WORK/ddp/model" --data "$WORK/root" --out "$WORK/eval" \
  --bootstrap 0 --device "$DEVICE" > "$RESULTS/evaluate.json"
echo "   ${SECONDS}s"
echo "== 3b. gradient checkpointing (+ torch.compile on GPU)"
extra=(--set optim.grad_checkpointing=true)
[[ $MODE == gpu ]] && extra+=(--set optim.compile=true)
$PY -m wit_retrieval train baselines/inject-mini.toml --out "$WORK/speed" "${common[@]}" --set optim.steps=20 \
  --set model.base=open_clip:wit-tiny-vit:random "${extra[@]}" > "$RESULTS/train_speed_options.json" \
  || echo '{"error": "grad checkpointing / compile run failed"}' > "$RESULTS/train_speed_options.json"
echo "   ${SECONDS}s"
echo "== 4. step cost: ours (inject, targets + entity images) vs a plain open_clip step, $MODEL"
$PY benchmarks/bench_train.py --only step --model "$MODEL" --device "$DEVICE" --step-batch "$STEP_BATCH" --step-pairs 6 \
  --out "$RESULTS/step.json"
echo "   ${SECONDS}s"
echo "== 5. embedding into a folder of parts (bf16 autocast on CUDA), then torchrun with every GPU"
$PY -m wit_retrieval embed --model "open_clip:$MODEL:random" --images "$WORK/root/images" \
  --out "$WORK/emb-parts" --device "$DEVICE" --batch-size 256 > "$RESULTS/embed.json"
NGPU=$($PY -c "import torch; print(max(1, torch.cuda.device_count()))")
$PY -m torch.distributed.run --standalone --nproc_per_node "$NGPU" -m wit_retrieval embed \
  --model "open_clip:$MODEL:random" --images "$WORK/root/images" --out "$WORK/emb-ranks" --batch-size 256 \
  > "$RESULTS/embed_torchrun.json"
echo "   ${SECONDS}s"
echo "== 6. images/s, ViT-B-32 on 640x480 JPEGs: models.embed against a plain decode-preprocess-encode loop"
[[ $MODE == gpu ]] || cp benchmarks/results/embed.md "$WORK/embed.md.kept"  # a dry run keeps the committed CPU table
$PY benchmarks/bench_embed.py --models "open_clip:ViT-B-32:random" --images "$EMB_IMAGES" --size 480 \
  --batch-size "$EMB_BATCH" --decoders threads --fast-paths auto --repeats 1 --skip-train --device "$DEVICE" \
  --max-other-load 100 > "$RESULTS/embed_throughput.txt" 2>&1 || echo "embed throughput failed" >> "$RESULTS/embed_throughput.txt"
[[ $MODE == gpu ]] || cp "$WORK/embed.md.kept" benchmarks/results/embed.md
tail -20 "$RESULTS/embed_throughput.txt"
echo "   ${SECONDS}s"
echo "== 7. exact search in torch on the device equals faiss on the CPU (ids, tie order, scores)"
$PY benchmarks/gpu_exact_check.py --device "$DEVICE" --vectors "$EXACT_VECTORS" > "$RESULTS/exact_search.json"
echo "   ${SECONDS}s"
cat "$RESULTS"/*.json
echo "gpu_check ($MODE) done in ${SECONDS}s; figures in $RESULTS"
