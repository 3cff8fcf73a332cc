#!/usr/bin/env bash
# The checks and timings that need a CUDA GPU, in one go (a lent GPU machine is
# held by the minute, so nothing here waits for a person):
#
#     bench/gpu.sh OUT [WORK] [STAGE ...]
#
#   tests       tests/test_gpu.py: every stage runs on the GPU, the hot loops never wait for it
#   demo        `attribkit demo --device cuda` from an empty folder, timed, with the seconds
#               each stage recorded (the shards' and the run's)
#   train       MTAA at the paper's width (1) on the demo's data, 2 epochs, fp32 then bf16
#   attribute   bench/attribute.py on the demo's run, --device cuda then cpu
#   generation  bench/generation.py (engine and raw ceiling) at 64 images per cell, cuda then cpu
# (default: all, in that order; train, attribute and generation need demo's folders in WORK).
# The cpu rows run on the same machine in the same sitting, so their ratios are fair. The log
# goes to stdout (tee it), the JSON to OUT, the demo's folders to WORK (default: a temporary one).
set -uo pipefail
out=${1:?usage: bench/gpu.sh OUT [WORK] [STAGE ...]}
work=${2:-$(mktemp -d)}
shift $(( $# < 2 ? $# : 2 ))
stages=${*:-tests demo train attribute generation}
mkdir -p "$out" "$work"
py=${PYTHON:-python3}
export GIT_PYTHON_REFRESH=quiet PYTHONUNBUFFERED=1 PYTHONPATH="bench${PYTHONPATH:+:$PYTHONPATH}"

millis() { echo $(( $(date +%s%N) / 1000000 )); }

machine() {
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $py -c "import os, torch, timm; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'timm', timm.__version__,
'cpus', os.cpu_count(), 'torch threads', torch.get_num_threads())"
  $py -c "from machine import cpu_name; print('cpu', cpu_name())"
}

tests() {
  ATTRIBKIT_DISABLE_PLUGIN_AUTOLOAD=1 $py -m pytest -p no:cacheprovider -v -rs tests/test_gpu.py
}

demo() {
  local start rc
  start=$(millis)
  $py -m attribkit demo --out "$work/demo" --device cuda --json > "$out/demo-cuda.json" 2> "$out/demo-cuda.err"
  rc=$?
  echo "demo rc $rc in $(( $(millis) - start )) ms"
  $py - "$work/demo" <<'EOF'
import json, sys
from pathlib import Path
demo = Path(sys.argv[1])
for name in ("data", "unknown"):
    shards = json.loads((demo / name / "manifest.json").read_text())["shards"].values()
    print(f"generate {name}: {sum(s['seconds'] for s in shards):.1f} s over {len(shards)} shards")
run = json.loads((demo / "run" / "run.json").read_text())
print(f"train: {run['seconds']} s, runtime {run['runtime']}")
EOF
}

train() {
  local precision
  for precision in fp32 bf16; do
    rm -rf "$work/run-w1-$precision"
    $py -m attribkit train --data "$work/demo/data" --out "$work/run-w1-$precision" --width 1 --epochs 2 \
        --device cuda --precision $precision > /dev/null 2>&1 || { echo "train $precision failed"; continue; }
    $py -c "import json, sys; r = json.load(open(sys.argv[1])); m = r['final_test_metrics']
print('train width 1, 2 epochs,', sys.argv[2], r['seconds'], 's; test', {k: m[k] for k in sorted(m) if 'acc' in k})" \
        "$work/run-w1-$precision/run.json" $precision
  done
}

attribute() {
  local device
  for device in cuda cpu; do
    $py bench/attribute.py --run "$work/demo/run" --data "$work/demo/data" --device $device \
        --out "$out/attribute-$device.json"
  done
}

generation() {
  local device
  for device in cuda cpu; do
    $py bench/generation.py --zoo "$work/demo/zoo" --per-cell 64 --skip-rss --skip-naive --device $device \
        --out "$out/generation-$device.json"
  done
}

machine 2>&1
for stage in $stages; do
  echo "== $stage"
  $stage 2>&1
done
