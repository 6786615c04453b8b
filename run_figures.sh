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

all_figures=(fedper_cifar10 fedper_kp fedper_finetune fedper_linear_base fedper_cifar100 fedper_flickr)
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
    --list) echo "${all_figures[*]}"; exit 0 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) selected+=("$1") ;;
  esac
  shift
done
[[ ${#selected[@]} -eq 0 ]] && selected=("${all_figures[@]}")

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
      run_sweep fedper_kp_fedavg fedper experiment=fedper/figure4_cpu algorithm=fedavg \
        model.num_head_layers=2
      plot fedper_kp_sweep_k4_mobilenet_32px.png "$sweeps/fedper_kp" "$sweeps/fedper_kp_fedavg" ;;
    full)
      for model in mobilenet_v1 resnet34; do
        run_sweep "fedper_figure4_$model" fedper experiment=fedper/figure4 "model=$model"
        run_sweep "fedper_figure4_${model}_fedavg" fedper experiment=fedper/figure4 \
          "model=$model" algorithm=fedavg model.num_head_layers=2
        plot "fedper_figure4_${model}.png" "$sweeps/fedper_figure4_$model" \
          "$sweeps/fedper_figure4_${model}_fedavg"
      done ;;
  esac
}

# Appendix A.3: one epoch of personal-layer fine-tuning at the start of each round.
fedper_finetune() {
  case "$mode" in
    tiny)
      run_sweep fedper_finetune fedper "${tiny[@]}" algorithm=fedper head_finetune_epochs=0,1
      plot fedper_finetune_tiny.png "$sweeps/fedper_finetune" ;;
    quick)
      run_sweep fedper_finetune fedper experiment=fedper/finetune_cpu
      plot fedper_finetune_k4_mobilenet_32px.png "$sweeps/fedper_finetune" ;;
    full)
      run_sweep fedper_finetune_cifar100 fedper experiment=fedper/finetune
      for model in mobilenet_v1 resnet34; do
        plot "fedper_figure15_16_${model}.png" "$sweeps/fedper_finetune_cifar100/${model}_"*
      done ;;
  esac
}

# Sections 4.4-4.5: the base replaced by one linear map, against the full model and local.
fedper_linear_base() {
  case "$mode" in
    tiny)
      run_sweep fedper_linear_base fedper "${tiny[@]}" algorithm=fedper,local \
        model.linear_base=false,true
      plot fedper_linear_base_tiny.png "$sweeps/fedper_linear_base" ;;
    quick)
      run_sweep fedper_linear_base fedper experiment=fedper/linear_base_cpu
      plot fedper_linear_base_k4_mobilenet_32px.png "$sweeps/fedper_linear_base" ;;
    full)
      run_sweep fedper_linear_base_cifar100 fedper experiment=fedper/linear_base
      for model in mobilenet_v1 resnet34; do
        plot "fedper_figure5_6_${model}.png" "$sweeps/fedper_linear_base_cifar100/${model}_"*
      done ;;
  esac
}

# CIFAR-100 (Figures 11, 12 and 14): needs cifar-100-python/ under the data root.
fedper_cifar100() {
  case "$mode" in
    tiny|quick) echo "== fedper_cifar100: full mode only (CIFAR-100 is not in the quick data set)" ;;
    full)
      run_sweep fedper_cifar100 fedper experiment=fedper/cifar100
      for model in mobilenet_v1 resnet34; do
        for k in 40 80 100; do
          plot "fedper_figure11_12_${model}_k${k}.png" "$sweeps/fedper_cifar100/${model}_k${k}_"*
        done
        run_sweep "fedper_figure14_$model" fedper experiment=fedper/figure14 "model=$model"
        plot "fedper_figure14_${model}.png" "$sweeps/fedper_figure14_$model"
      done ;;
  esac
}

# FLICKR-AES (Figures 7 and 8): needs the published files under <data root>/flickr/.
fedper_flickr() {
  case "$mode" in
    tiny|quick) echo "== fedper_flickr: full mode only (FLICKR-AES must be downloaded by hand)" ;;
    full)
      run_sweep fedper_figure7 fedper experiment=fedper/figure7
      plot fedper_figure7_mobilenet_v1.png "$sweeps/fedper_figure7"
      run_sweep fedper_figure8 fedper experiment=fedper/figure8
      plot fedper_figure8_resnet34.png "$sweeps/fedper_figure8" ;;
  esac
}

declare -A expected=(
  [tiny]="about 1-3 minutes per figure on a 2-core CPU"
  [quick]="on a 2-core CPU: fedper_cifar10 ~50 min (3 runs x 20 rounds), fedper_kp ~40 min (5 runs x 10 rounds), fedper_finetune ~20 min, fedper_linear_base ~25 min"
  [full]="the papers' budgets (about 90 runs of 25-50 rounds, mostly at 224 px): days of CPU, hours to a day on one GPU"
)
echo "run_figures.sh: mode=$mode, figures: ${selected[*]}"
echo "expected time: ${expected[$mode]}; data root: $PFL_DATA_ROOT; output: $out/"
for figure in "${selected[@]}"; do
  case "$figure" in
    fedper_cifar10|fedper_kp|fedper_finetune|fedper_linear_base|fedper_cifar100|fedper_flickr)
      "$figure" ;;
    *) echo "unknown figure '$figure'; see --list" >&2; exit 2 ;;
  esac
done
echo "done: figures in $out/"
