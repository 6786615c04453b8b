#!/usr/bin/env bash
# Regenerate the suite's figures (PNG) into _static/ and the sweeps' working tables
# (Markdown + CSV) with Hydra multirun sweeps and the shared plotting code (pflcore.reports.plots,
# pflcore.reports.tables). The tables the READMEs publish are not written here: they come from the
# committed run folders (_static/runs/) through `python -m pflcore.reports.publish`; copy a
# finished run there with `python -m pflcore.reports.import_run RUN _static/runs/...`.
#
#   bash run_figures.sh [--cpu | --quick | --tiny] [--data-root DIR] [--out DIR] [--sweeps DIR] [--list] [FIGURE ...]
#
#   (default)   the papers' budgets (224 px FedPer, 5000 pFedHN steps, ...); meant for a GPU
#   --cpu       the CPU-sized runs of the evidence in the READMEs (hours)
#   --quick     reduced rounds (and, for FedPer, a fifth of CIFAR-10) on real data, sized
#               for a 2-core CPU (28 minutes for every figure, measured on an idle 2-core CPU)
#   --tiny      one or two rounds on scikit-learn's digits (smoke test of the pipeline)
#   --data-root where the datasets are (default: $PFL_DATA_ROOT, else ./datasets); quick
#               mode needs MNIST/raw/, cifar10/cifar10_train.npz, emnist_letters/ there
#   --out       where figures go, and the reduced modes' tables (default: _static); the cpu
#               and full modes write their tables beside their sweeps
#   --sweeps    where the run folders go (default: multirun/figures; one folder per mode)
#   FIGURE      one or more names from --list (default: all)
#
# A finished sweep leaves a .complete marker and is not run again: rerun the same
# command after an interruption and it resumes with the sweeps not yet finished.
set -euo pipefail
# Paths given on the command line are relative to where the script is called from;
# the defaults are relative to the repository.
absolute() { [[ $1 == /* ]] && echo "$1" || echo "$PWD/$1"; }

all_figures=(
  fedper_cifar10 fedper_kp fedper_finetune fedper_linear_base fedper_cifar100 fedper_flickr
  pfedhn_mnist pfedhn_cifar10 pfedhn_cifar100 pfedhn_novel
  perfedavg_mnist perfedavg_cifar10 perfedavg_jiang
  fedfomo_cifar10 fedfomo_cifar100
  ditto_pathological
)
mode=full
out=""
sweep_root=""
data_root="${PFL_DATA_ROOT:-}"
selected=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cpu) mode=cpu ;;
    --quick) mode=quick ;;
    --tiny) mode=tiny ;;
    --data-root) data_root="$(absolute "$2")"; shift ;;
    --out) out="$(absolute "$2")"; shift ;;
    --sweeps) sweep_root="$(absolute "$2")"; shift ;;
    --list) echo "${all_figures[*]}"; exit 0 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) selected+=("$1") ;;
  esac
  shift
done
[[ ${#selected[@]} -eq 0 ]] && selected=("${all_figures[@]}")
for figure in "${selected[@]}"; do
  if [[ " ${all_figures[*]} " != *" $figure "* ]]; then
    echo "unknown figure '$figure'; see --list" >&2
    exit 2
  fi
done

[[ -n $data_root ]] && data_root="$(absolute "$data_root")"
cd "$(dirname "$0")"
out="${out:-_static}"
sweep_root="${sweep_root:-multirun/figures}"
export PFL_DATA_ROOT="${data_root:-$PWD/datasets}"
export FLWR_TELEMETRY_ENABLED=0
mkdir -p "$out"
sweeps="$sweep_root/$mode"
# Figure files of the reduced modes carry the mode in their name, so a quick or tiny
# run never overwrites the figures the README shows.
suffix=""
[[ $mode == quick || $mode == tiny ]] && suffix="_$mode"

# table_out NAME: where a working table goes. The reduced modes' go to $out with their suffix;
# the cpu and full modes' beside their sweeps, so they never replace the published tables in
# _static/ (python -m pflcore.reports.publish writes those from the committed records).
table_out() {
  if [[ -n $suffix ]]; then echo "$out/$1$suffix.md"; else echo "$sweeps/$1.md"; fi
}

# run_sweep NAME PACKAGE OVERRIDES...: one Hydra multirun into $sweeps/NAME, skipped if done.
# Every run writes checkpoints (pFedHN's thousands of short rounds: every 100), so an
# interrupted sweep resumes where it stopped: the same command, into the same sweep folder,
# leaves its completed runs alone and resumes the interrupted ones from their checkpoints.
run_sweep() {
  local name="$1" package="$2"; shift 2
  local dir="$sweeps/$name"
  local command="python -m $package.main --multirun $*"
  local every=1
  [[ $package == pfedhn ]] && every=100
  if [[ -f "$dir/.complete" ]]; then
    echo "== $name: already complete in $dir (delete it to rerun)"
    return
  fi
  [[ -d "$dir" ]] && echo "== $name: resuming the interrupted sweep in $dir"
  echo "== $name: $command"
  python -m "$package.main" --multirun "$@" "hydra.sweep.dir=$dir" "checkpoint_every=$every"
  echo "$command" > "$dir/.command"
  touch "$dir/.complete"
}

# plot NAME FOLDER... [plot options]: $out/NAME$suffix.png from the runs below the folders.
plot() {
  local name="$1"; shift
  python -m pflcore.reports.plots "$@" --out "$out/$name$suffix.png"
}

# table NAME METRIC FOLDER [tables options]: NAME.{md,csv} (see table_out), one row per method,
# beside the paper's number, with the command that made the runs.
table() {
  local name="$1" metric="$2" folder="$3"; shift 3
  python -m pflcore.reports.tables "$folder" --metric "$metric" \
    --command "$(cat "$folder/.command")" --out "$(table_out "$name")" "$@"
}

# The papers' numbers beside ours (sources in the README).
fedper_paper=(--paper "fedper=~91 (Flower baselines/fedper, Fig. 2 setting; read off its plot)" --paper "fedavg=~68 (same source)")
pfedhn_paper_c10=(--paper "pfedhn=88.38 ± 0.29 (Table 1)" --paper "pfedhn_pc=90.08 ± 0.63 (Table 1)"
  --paper "fedavg=47.79 ± 4.48 (Table 1)" --paper "local=68.11 ± 7.39 (Table 1)")
jiang_paper=(--paper "5/2=74.73 % -> 82.92 % (Table 1, EMNIST-62; FedLab-benchmarks paper_exp_res.png)"
  --paper "5/5=80.28 % -> 87.12 % (same source)"
  --paper "20/2=84.03 % -> 89.57 % (same source)" --paper "20/5=84.71 % -> 90.57 % (same source)")
perfedavg_paper=(--paper "fedavg_ft=75.96 ± 0.02 (Table 1, FedAvg + update)"
  --paper "perfedavg_fo=78.00 ± 0.02 (Table 1)" --paper "perfedavg_hf=79.85 ± 0.02 (Table 1)")
perfedavg_paper_c10=(--paper "fedavg_ft=40.49 ± 0.07 (Table 1, FedAvg + update)"
  --paper "perfedavg_fo=46.98 ± 0.1 (Table 1)" --paper "perfedavg_hf=52.49 ± 0.04 (Table 1)")

fedper_tiny=(experiment=fedper/quick num_rounds=1 local_epochs=1)
fedper_quick=(dataset.subset_fraction=0.2 num_rounds=4)

fedper_cifar10() {
  case "$mode" in
    tiny) run_sweep fedper_cifar10 fedper "${fedper_tiny[@]}" algorithm=fedavg,fedper ;;
    quick) run_sweep fedper_cifar10 fedper experiment=fedper/cifar10_cpu "${fedper_quick[@]}" ;;
    cpu) run_sweep fedper_cifar10 fedper experiment=fedper/cifar10_cpu ;;
    full)
      run_sweep fedper_figure2 fedper experiment=fedper/figure2
      for model in mobilenet_v1 resnet34; do
        for k in 4 8 10; do
          plot "fedper_figure2_${model}_k${k}" "$sweeps"/fedper_figure2/"${model}_k${k}_"*
        done
      done
      table fedper_figure2 final.test_acc_mean "$sweeps/fedper_figure2" "${fedper_paper[@]}"
      return ;;
  esac
  plot fedper_cifar10_k4_mobilenet_32px "$sweeps/fedper_cifar10"
  table fedper_cifar10 final.test_acc_mean "$sweeps/fedper_cifar10"
}

fedper_kp() {
  case "$mode" in
    tiny) run_sweep fedper_kp fedper "${fedper_tiny[@]}" algorithm=fedper model.num_head_layers=1,2 ;;
    quick|cpu)
      local extra=()
      [[ $mode == quick ]] && extra=("${fedper_quick[@]}")
      run_sweep fedper_kp fedper experiment=fedper/figure4_cpu "${extra[@]}"
      run_sweep fedper_kp_fedavg fedper experiment=fedper/figure4_cpu algorithm=fedavg \
        model.num_head_layers=2 "${extra[@]}"
      plot fedper_kp_sweep_k4_mobilenet_32px "$sweeps/fedper_kp" "$sweeps/fedper_kp_fedavg"
      return ;;
    full)
      for model in mobilenet_v1 resnet34; do
        run_sweep "fedper_figure4_$model" fedper experiment=fedper/figure4 "model=$model"
        run_sweep "fedper_figure4_${model}_fedavg" fedper experiment=fedper/figure4 \
          "model=$model" algorithm=fedavg model.num_head_layers=2
        plot "fedper_figure4_${model}" "$sweeps/fedper_figure4_$model" \
          "$sweeps/fedper_figure4_${model}_fedavg"
      done
      return ;;
  esac
  plot fedper_kp_sweep_k4_mobilenet_32px "$sweeps/fedper_kp"
}

# Appendix A.3: one epoch of personal-layer fine-tuning at the start of each round.
fedper_finetune() {
  case "$mode" in
    tiny) run_sweep fedper_finetune fedper "${fedper_tiny[@]}" algorithm=fedper head_finetune_epochs=0,1 ;;
    quick) run_sweep fedper_finetune fedper experiment=fedper/finetune_cpu "${fedper_quick[@]}" ;;
    cpu) run_sweep fedper_finetune fedper experiment=fedper/finetune_cpu ;;
    full)
      run_sweep fedper_finetune_cifar100 fedper experiment=fedper/finetune
      for model in mobilenet_v1 resnet34; do
        plot "fedper_figure15_16_${model}" "$sweeps/fedper_finetune_cifar100/${model}_"*
      done
      return ;;
  esac
  plot fedper_finetune_k4_mobilenet_32px "$sweeps/fedper_finetune"
  table fedper_finetune final.test_acc_mean "$sweeps/fedper_finetune"
}

# Sections 4.4-4.5: the base replaced by one linear map, against the full model and local.
fedper_linear_base() {
  case "$mode" in
    tiny) run_sweep fedper_linear_base fedper "${fedper_tiny[@]}" algorithm=fedper model.linear_base=false,true ;;
    quick) run_sweep fedper_linear_base fedper experiment=fedper/linear_base_cpu "${fedper_quick[@]}" ;;
    cpu) run_sweep fedper_linear_base fedper experiment=fedper/linear_base_cpu ;;
    full)
      run_sweep fedper_linear_base_cifar100 fedper experiment=fedper/linear_base
      for model in mobilenet_v1 resnet34; do
        plot "fedper_figure5_6_${model}" "$sweeps/fedper_linear_base_cifar100/${model}_"*
      done
      return ;;
  esac
  plot fedper_linear_base_k4_mobilenet_32px "$sweeps/fedper_linear_base"
  table fedper_linear_base final.test_acc_mean "$sweeps/fedper_linear_base"
}

# CIFAR-100 (Figures 11, 12 and 14): needs cifar-100-python/ under the data root.
fedper_cifar100() {
  case "$mode" in
    full)
      run_sweep fedper_cifar100 fedper experiment=fedper/cifar100
      for model in mobilenet_v1 resnet34; do
        for k in 40 80 100; do
          plot "fedper_figure11_12_${model}_k${k}" "$sweeps/fedper_cifar100/${model}_k${k}_"*
        done
        run_sweep "fedper_figure14_$model" fedper experiment=fedper/figure14 "model=$model"
        plot "fedper_figure14_${model}" "$sweeps/fedper_figure14_$model"
      done ;;
    *) echo "== fedper_cifar100: full mode only (CIFAR-100 is not in the offline data)" ;;
  esac
}

# FLICKR-AES (Figures 7 and 8): needs the published files under <data root>/flickr/.
fedper_flickr() {
  case "$mode" in
    full)
      run_sweep fedper_figure7 fedper experiment=fedper/figure7
      plot fedper_figure7_mobilenet_v1 "$sweeps/fedper_figure7"
      run_sweep fedper_figure8 fedper experiment=fedper/figure8
      plot fedper_figure8_resnet34 "$sweeps/fedper_figure8" ;;
    *) echo "== fedper_flickr: full mode only (FLICKR-AES must be downloaded by hand)" ;;
  esac
}

# pFedHN, MNIST, 50 clients: pooled accuracy at the best-validation step (the paper's metric).
pfedhn_mnist() {
  case "$mode" in
    tiny) run_sweep pfedhn_mnist pfedhn experiment=pfedhn/quick num_rounds=10 eval_every=5 novel.rounds=2 ;;
    quick) run_sweep pfedhn_mnist pfedhn experiment=pfedhn/mnist num_rounds=300 eval_every=50 ;;
    cpu|full) run_sweep pfedhn_mnist pfedhn experiment=pfedhn/mnist,pfedhn/mnist_cnn ;;
  esac
  plot pfedhn_mnist "$sweeps/pfedhn_mnist" --metric pooled
  table pfedhn_mnist best_val.test_acc_pooled "$sweeps/pfedhn_mnist" \
    --paper "pfedhn=99.28 ± 0.11 (as quoted by Flower PR #2377)"
}

pfedhn_cifar10() {
  case "$mode" in
    tiny) return ;;  # the tiny pFedHN run is pfedhn_mnist's
    quick) run_sweep pfedhn_cifar10 pfedhn experiment=pfedhn/cifar10_exact num_rounds=100 eval_every=25 ;;
    cpu) run_sweep pfedhn_cifar10 pfedhn experiment=pfedhn/cifar10_exact eval_every=50 \
      algorithm=pfedhn,pfedhn_pc ;;
    full) run_sweep pfedhn_cifar10 pfedhn experiment=pfedhn/cifar10 algorithm=pfedhn,pfedhn_pc ;;
  esac
  plot pfedhn_cifar10_exact "$sweeps/pfedhn_cifar10" --metric pooled
  table pfedhn_cifar10_exact best_val.test_acc_pooled "$sweeps/pfedhn_cifar10" \
    "${pfedhn_paper_c10[@]}"
}

# pFedHN, MNIST, novel clients at increasing distance (paper Sec. 5.3), beside FedAvg + FT.
pfedhn_novel() {
  case "$mode" in
    # No reduced version: the tiny novel-client run is pfedhn_mnist's (novel.rounds=2), and a
    # shorter budget would need its own ratio of FedAvg rounds to pFedHN rounds.
    tiny|quick) return ;;
    cpu|full) run_sweep pfedhn_novel pfedhn experiment=pfedhn/mnist_novel,pfedhn/mnist_novel_fedavg_ft ;;
  esac
  python -m pfedhn.novel_figure "$sweeps/pfedhn_novel/0" "$sweeps/pfedhn_novel/1" \
    --out "$out/pfedhn_novel$suffix.png"
}

pfedhn_cifar100() {
  case "$mode" in
    full)
      run_sweep pfedhn_cifar100 pfedhn experiment=pfedhn/cifar100 algorithm=pfedhn,pfedhn_pc
      plot pfedhn_cifar100 "$sweeps/pfedhn_cifar100" --metric pooled
      table pfedhn_cifar100 best_val.test_acc_pooled "$sweeps/pfedhn_cifar100" \
        --paper "pfedhn=59.48 ± 0.67 (Table 1)" \
        --paper "pfedhn_pc=60.17 ± 1.63 (Table 1)" ;;
    *) echo "== pfedhn_cifar100: full mode only (CIFAR-100 is not in the offline data)" ;;
  esac
}

# Per-FedAvg FO and HF vs FedAvg + update (one alpha-step before testing), MNIST, Table 1.
perfedavg_mnist() {
  case "$mode" in
    tiny) run_sweep perfedavg_mnist perfedavg experiment=perfedavg/quick num_rounds=2 \
      algorithm=fedavg_ft,perfedavg_hf ;;
    quick) run_sweep perfedavg_mnist perfedavg experiment=perfedavg/mnist_cpu num_rounds=100 ;;
    cpu|full) run_sweep perfedavg_mnist perfedavg experiment=perfedavg/mnist_table1 seed=0,1,2 ;;
  esac
  plot perfedavg_mnist "$sweeps/perfedavg_mnist" --extra before
  table perfedavg_mnist final.test_acc_mean "$sweeps/perfedavg_mnist" "${perfedavg_paper[@]}"
}

# The same four methods on Table 1's CIFAR-10 row (the exact training set from the .npz).
perfedavg_cifar10() {
  case "$mode" in
    tiny) return ;;  # CIFAR-10 is not among the tiny mode's generated data
    quick) run_sweep perfedavg_cifar10 perfedavg experiment=perfedavg/cifar10_table1 num_rounds=100 ;;
    cpu|full) run_sweep perfedavg_cifar10 perfedavg experiment=perfedavg/cifar10_table1 seed=0,1,2 ;;
  esac
  plot perfedavg_cifar10 "$sweeps/perfedavg_cifar10" --extra before
  table perfedavg_cifar10 final.test_acc_mean "$sweeps/perfedavg_cifar10" "${perfedavg_paper_c10[@]}"
}

# Jiang et al.'s pipeline: FedAvg, Reptile fine-tuning, personalization of held-out clients.
perfedavg_jiang() {
  case "$mode" in
    tiny) run_sweep perfedavg_jiang perfedavg experiment=perfedavg/jiang_quick num_rounds=2 jiang.reptile.rounds=1 ;;
    quick) run_sweep perfedavg_jiang perfedavg experiment=perfedavg/jiang_cpu num_rounds=10 jiang.reptile.rounds=3 ;;
    cpu)
      run_sweep perfedavg_jiang perfedavg experiment=perfedavg/jiang_cpu
      # the same partition without the Reptile stage: FedAvg + fine-tuning
      run_sweep perfedavg_jiang_noreptile perfedavg experiment=perfedavg/jiang_cpu \
        clients_per_round=5 jiang.reptile.rounds=0
      python -m perfedavg.jiang "$sweeps/perfedavg_jiang" "$sweeps/perfedavg_jiang_noreptile" \
        --command "$(cat "$sweeps/perfedavg_jiang/.command"); $(cat "$sweeps/perfedavg_jiang_noreptile/.command")" \
        "${jiang_paper[@]}" --out "$(table_out perfedavg_jiang)"
      # Jiang et al.'s Table 1 cells: FedAvg alone, K in {5, 20} x E in {2, 5}, three seeds
      run_sweep perfedavg_jiang_fedavg perfedavg experiment=perfedavg/jiang_cpu \
        clients_per_round=5,20 local_epochs=2,5 jiang.reptile.rounds=0 seed=0,1,2
      python -m perfedavg.jiang "$sweeps/perfedavg_jiang_fedavg" \
        --command "$(cat "$sweeps/perfedavg_jiang_fedavg/.command")" \
        "${jiang_paper[@]}" --out "$(table_out perfedavg_jiang_fedavg)"
      return ;;
    full) run_sweep perfedavg_jiang perfedavg experiment=perfedavg/jiang_seed ;;
  esac
  python -m perfedavg.jiang "$sweeps/perfedavg_jiang" --command "$(cat "$sweeps/perfedavg_jiang/.command")" \
    "${jiang_paper[@]}" --out "$(table_out perfedavg_jiang)"
}

# FedFomo vs Local, FedAvg and FedAvg + FT at the authors' protocol and budget (NVlabs/FedFomo):
# CIFAR-10, 15 clients, latent (trained embedding) and pathological splits, M = 5 on both and
# M = 10 on the pathological one. FedAvg's row is FedAvg + FT's global model before fine-tuning
# (the same training, recorded as before_*). --cpu runs seed 0, the full mode seeds 0-2.
fedfomo_fedavg_row="before=fedavg (FedAvg + FT's global model, before fine-tuning)"
fedfomo_cifar10() {
  local seeds=0
  case "$mode" in
    tiny) run_sweep fedfomo_cifar10 fedfomo experiment=fedfomo/quick num_rounds=2 algorithm=fedfomo,fedavg
      plot fedfomo_digits "$sweeps/fedfomo_cifar10"
      return ;;
    quick) run_sweep fedfomo_cifar10 fedfomo experiment=fedfomo/cifar10_cpu num_rounds=3
      for kind in pathological latent; do
        plot "fedfomo_cifar10_cpu_$kind" "$sweeps/fedfomo_cifar10/$kind"
        python -m pflcore.reports.tables "$sweeps/fedfomo_cifar10/$kind" --metric final.test_acc_mean \
          --command "$(cat "$sweeps/fedfomo_cifar10/.command")" \
          --out "$(table_out "fedfomo_cifar10_cpu_$kind")"
      done
      return ;;
    full) seeds=0,1,2 ;;
  esac
  run_sweep fedfomo_paper_latent fedfomo experiment=fedfomo/paper \
    algorithm=fedfomo,local,fedavg_ft seed=$seeds
  run_sweep fedfomo_paper_pathological fedfomo experiment=fedfomo/paper_pathological \
    algorithm=fedfomo,local,fedavg_ft seed=$seeds
  run_sweep fedfomo_paper_pathological_m10 fedfomo experiment=fedfomo/paper_pathological \
    algorithm=fedfomo fomo.num_candidates=10 seed=$seeds
  plot fedfomo_paper_latent "$sweeps/fedfomo_paper_latent" --extra before
  table fedfomo_paper_latent final.test_acc_mean "$sweeps/fedfomo_paper_latent" \
    --extra "$fedfomo_fedavg_row"
  local path="$sweeps/fedfomo_paper_pathological" m10="$sweeps/fedfomo_paper_pathological_m10"
  plot fedfomo_paper_pathological "$path" "$m10" --extra before
  python -m pflcore.reports.tables "$path" "$m10" --metric final.test_acc_mean \
    --command "$(cat "$path/.command"); $(cat "$m10/.command")" \
    --extra "$fedfomo_fedavg_row" --out "$(table_out fedfomo_paper_pathological)"
}

fedfomo_cifar100() {
  case "$mode" in
    full)
      run_sweep fedfomo_cifar100 fedfomo experiment=fedfomo/cifar100
      plot fedfomo_cifar100 "$sweeps/fedfomo_cifar100" ;;
    *) echo "== fedfomo_cifar100: full mode only (CIFAR-100 is not in the offline data)" ;;
  esac
}

ditto_pathological() {
  local seeds=0
  case "$mode" in
    tiny) run_sweep ditto_pathological ditto experiment=ditto/quick num_rounds=2
      plot ditto_digits "$sweeps/ditto_pathological"
      return ;;
    quick) run_sweep ditto_pathological ditto experiment=ditto/quick
      plot ditto_digits "$sweeps/ditto_pathological"
      return ;;
    full) seeds=0,1,2 ;;
  esac
  # FedFomo's pathological split and budget: its FedAvg, FedAvg + FT and Local runs
  # (fedfomo_cifar10) are Ditto's baselines
  run_sweep ditto_paper_pathological ditto experiment=ditto/paper_pathological \
    algorithm=ditto seed=$seeds
  plot ditto_paper_pathological "$sweeps/ditto_paper_pathological"
}

# Expected wall time per figure and mode on a 2-core CPU (full: the papers' budgets, GPU).
declare -A minutes=(
  [tiny]=1
  [quick_fedper_cifar10]=4 [quick_fedper_kp]=6 [quick_fedper_finetune]=3
  [quick_fedper_linear_base]=4 [quick_pfedhn_mnist]=2 [quick_pfedhn_cifar10]=3
  [quick_perfedavg_mnist]=3 [quick_perfedavg_cifar10]=6 [quick_perfedavg_jiang]=2 [quick_fedfomo_cifar10]=4
  [quick_ditto_pathological]=5
  [cpu_fedper_cifar10]=80 [cpu_fedper_kp]=60 [cpu_fedper_finetune]=30
  [cpu_fedper_linear_base]=25 [cpu_pfedhn_mnist]=90 [cpu_pfedhn_cifar10]=60
  [cpu_perfedavg_mnist]=165 [cpu_perfedavg_cifar10]=150 [cpu_perfedavg_jiang]=60 [cpu_fedfomo_cifar10]=160
  [cpu_ditto_pathological]=60
)
echo "run_figures.sh: mode=$mode; data root: $PFL_DATA_ROOT; output: $out/"
total=0
for figure in "${selected[@]}"; do
  if [[ $mode == full ]]; then
    echo "  $figure: the paper's budget (hours to a day on one GPU)"
    continue
  fi
  m="${minutes[${mode}_$figure]:-${minutes[tiny]}}"
  [[ $mode == tiny ]] && m=1
  case "$figure" in fedper_cifar100|fedper_flickr|pfedhn_cifar100|fedfomo_cifar100) m=0 ;; esac
  [[ $mode == tiny ]] && case "$figure" in pfedhn_cifar10|pfedhn_novel|perfedavg_cifar10) m=0 ;; esac
  total=$((total + m))
  echo "  $figure: about $m min"
done
[[ $mode != full ]] && echo "expected total: about $total min on a 2-core CPU (less with a GPU)"
for figure in "${selected[@]}"; do
  "$figure"
done
echo "done: figures in $out/, working tables in $( [[ -n $suffix ]] && echo "$out/" || echo "$sweeps/" )"
if [[ $mode == cpu || $mode == full ]]; then
  echo "to publish: python -m pflcore.reports.import_run RUN _static/runs/... for each finished run,"
  echo "  a [[table]] entry in _static/tables.toml, then python -m pflcore.reports.publish"
fi
