#!/bin/bash
# Run every stage of the pipeline on a tiny scenario through the CLI and keep
# every file it writes, so that two versions of attribkit can be compared byte
# for byte with bench/same_numbers.py:
#
#   bench/pipeline_bytes.sh /tmp/before     # on the old commit
#   bench/pipeline_bytes.sh /tmp/after      # on the new one, same machine
#   python bench/same_numbers.py /tmp/before /tmp/after
#
# Floats differ between CPUs, so compare only folders made on one machine.
# Installed plugin heads (heads-extra, example-head) join the MTAA run when
# they are installed, which puts third-party heads through the same check.
set -euo pipefail
out=${1:?usage: bench/pipeline_bytes.sh OUT}
here=$(cd "$(dirname "$0")" && pwd)
ak="${PYTHON:-python} -m attribkit"
export GIT_PYTHON_REFRESH=quiet
mkdir -p "$out"
cd "$out"
$ak victims train --out zoo --arch resnet18 --arch vgg16 --width 0.0625 --epochs 1 --json > victims.json
$ak generate --scenario "$here/scenarios/tiny.toml" --zoo zoo --out data --json > generate.json
train() { local name=$1; shift; $ak train --data data --out "runs/$name" --width 0.125 --epochs 2 \
  --batch-size 16 --input-scale 1 --json "$@" > "train-$name.json"; }
train mtaa
train mtaa-sum-single --loss sum --regression single --no-perturbation --schedule onecycle --pool avg+max
train single-task --model single-task
train single-label --model single-label
train cnn --model cnn
for run in mtaa mtaa-sum-single single-task single-label cnn; do
  $ak attribute --run "runs/$run" data/shards/vgg16__pgd__test.safetensors data/shards/resnet18__cw__test.safetensors --json > "attribute-$run.json" || true
  $ak evaluate --run "runs/$run" --data data --json > "evaluate-$run.json"
done
$ak evaluate --run runs/mtaa --data data --baseline runs/single-task --baseline runs/cnn \
  --split validation --out evaluation-mtaa-validation --json > evaluate-mtaa-validation.json
echo "pipeline_bytes: wrote $out"
