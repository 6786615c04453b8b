#!/usr/bin/env bash
# Regenerate the suite's figures into _static/ (PNG) with Hydra multirun sweeps.
#
#   bash run_figures.sh [--quick | --tiny] [--data-root DIR] [--out DIR] [--list] [FIGURE ...]
#
#   (default)   the papers' budgets: 224 px, 25-50 rounds; meant for a GPU machine
#   --quick     reduced rounds on real data, sized for a 2-core CPU
#   --tiny      two rounds on scikit-learn's digits (smoke test of the whole pipeline)
#   --data-root where the datasets are (default: $PFL_DATA_ROOT, else ./datasets);
#               quick mode needs cifar10/cifar10_train.npz there
#   FIGURE      one or more names from --list (default: all)
#
# A finished sweep leaves a .complete marker and is not run again: rerun the same
# command after an interruption and it resumes with the sweeps not yet finished.
set -euo pipefail
cd "$(dirname "$0")"

mode=full
out=_static
data_root="${PFL_DATA_ROOT:-datasets}"
selected=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) mode=quick ;;
    --tiny) mode=tiny ;;
    --data-root) data_root="$2"; shift ;;
    --out) out="$2"; shift ;;
    --list) echo "fedper_cifar10 fedper_kp"; exit 0 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) selected+=("$1") ;;
  esac
  shift
done
[[ ${#selected[@]} -eq 0 ]] && selected=(fedper_cifar10 fedper_kp)

export PFL_DATA_ROOT="$(cd "$data_root" 2>/dev/null && pwd || echo "$data_root")"
export FLWR_TELEMETRY_ENABLED=0
mkdir -p "$out"
sweeps="multirun/figures/$mode"

# run_sweep NAME PACKAGE OVERRIDES...: one Hydra multirun into $sweeps/NAME, skipped if done.
run_sweep() {
  local name="$1" package="$2"; shift 2
  local dir="$sweeps/$name"
  if [[ -f "$dir/.complete" ]]; then
    echo "== $name: already complete in $dir (delete it to rerun)"
    return
  fi
  echo "== $name: python -m $package.main --multirun $* hydra.sweep.dir=$dir"
  python -m "$package.main" --multirun "$@" "hydra.sweep.dir=$dir"
  touch "$dir/.complete"
}

plot() {
  local png="$1"; shift
  python -m pflcore.plots "$@" --out "$out/$png"
}

tiny=(experiment=fedper/quick num_rounds=2 local_epochs=1)

fedper_cifar10() {
  case "$mode" in
    tiny)
      run_sweep fedper_cifar10 fedper "${tiny[@]}" algorithm=fedavg,fedper,local
      plot fedper_cifar10_tiny.png "$sweeps/fedper_cifar10" ;;
    quick)
      run_sweep fedper_cifar10 fedper experiment=fedper/cifar10_cpu
      plot fedper_cifar10_k4_mobilenet_32px.png "$sweeps/fedper_cifar10" ;;
    full)
      run_sweep fedper_figure2 fedper experiment=fedper/figure2
      for model in mobilenet_v1 resnet34; do
        for k in 4 8 10; do
          plot "fedper_figure2_${model}_k${k}.png" "$sweeps"/fedper_figure2/"${model}_k${k}_"*
        done
      done ;;
  esac
}

fedper_kp() {
  case "$mode" in
    tiny)
      run_sweep fedper_kp fedper "${tiny[@]}" algorithm=fedper model.num_head_layers=1,2
      plot fedper_kp_tiny.png "$sweeps/fedper_kp" ;;
    quick)
      run_sweep fedper_kp fedper experiment=fedper/figure4_cpu
      plot fedper_kp_sweep_k4_mobilenet_32px.png "$sweeps/fedper_kp" ;;
    full)
      for model in mobilenet_v1 resnet34; do
        run_sweep "fedper_figure4_$model" fedper experiment=fedper/figure4 "model=$model"
        plot "fedper_figure4_${model}.png" "$sweeps/fedper_figure4_$model"
      done ;;
  esac
}

declare -A expected=(
  [tiny]="about 3 minutes per figure on a 2-core CPU"
  [quick]="fedper_cifar10 about 50 min, fedper_kp about 30 min on a 2-core CPU"
  [full]="36 runs of 25-50 rounds at 224 px: hours on one GPU"
)
echo "run_figures.sh: mode=$mode, figures: ${selected[*]}"
echo "expected time: ${expected[$mode]}; data root: $PFL_DATA_ROOT; output: $out/"
for figure in "${selected[@]}"; do
  case "$figure" in
    fedper_cifar10|fedper_kp) "$figure" ;;
    *) echo "unknown figure '$figure'; see --list" >&2; exit 2 ;;
  esac
done
echo "done: figures in $out/"
