"""Estimated GPU memory per actor for every preset, measured with torch on the CPU.

``python -m bench.memory_estimate [--package NAME] [--out FILE.json]``

For each preset of ``conf/experiment/<package>/`` (deduplicated by model, image
size and batch sizes), and for the settings in ``VARIANTS``, the package's own
model is built and measured:

* weights, gradients and the SGD momentum buffer (when ``momentum > 0``): the
  parameter bytes, once each;
* activations kept for the backward pass of one training batch: every tensor
  autograd saves during a forward pass plus the loss
  (``torch.autograd.graph.saved_tensors_hooks``), deduplicated by storage,
  parameters excluded. Measured at batch 2, 4 and 8 and extrapolated linearly
  to the preset's ``batch_size`` (the batch-8 value checks the line: the
  script stops if it is off by more than 1 %);
* evaluation: the largest input + output of one layer at ``eval_batch_size``
  (no autograd): a lower bound of the evaluation peak.

training estimate = weights + gradients + momentum + saved activations. Not
included: the CUDA context of the process, cuDNN/cuBLAS workspaces, the caching
allocator's rounding and fragmentation, the client's uint8 data split on the
device (a few MB), and pFedHN's hypernetwork, which lives on the server
(``server_device``; its row is printed separately). These are estimates from a
CPU forward pass, not GPU measurements; ``bench/gpu_speed.py`` measures the
real peaks on a GPU.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from torch import nn

from pflcore.config import to_plain

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
PACKAGES = ("fedper", "pfedhn", "perfedavg", "fedfomo")
# (classes, channels) of each dataset; only the last layer depends on classes
DATASETS = {
    "cifar10": (10, 3),
    "cifar100": (100, 3),
    "mnist": (10, 1),
    "digits": (10, 1),
    "emnist": (26, 1),
    "flickr": (5, 3),
}
MIB = 2**20
# Settings no preset has but users ask for: (package, preset, overrides)
VARIANTS = [("fedper", "figure2", ["model=resnet34"])]


def build(package: str, config: dict[str, Any]) -> nn.Module:
    """The package's training model for ``config`` (on the CPU)."""
    classes, channels = DATASETS[config["dataset"]["name"]]
    size = int(config["dataset"]["image_size"])
    if package == "fedper":
        from fedper.client import initial_model
        from fedper.settings import read_settings

        s = read_settings(config)
        return initial_model(
            s.model, classes, channels, seed=s.seed, image_size=s.dataset.image_size
        )
    if package == "pfedhn":
        from pfedhn.models import build_target

        model = config["model"]
        target = build_target(
            model["target"],
            channels,
            size,
            classes,
            with_head=config["algorithm"] != "pfedhn_pc",
            n_kernels=int(model["n_kernels"]),
        )
        if config["algorithm"] != "pfedhn_pc":
            return target
        head = nn.Linear(int(target.feature_dim), classes)  # type: ignore[arg-type]
        return nn.Sequential(target, head)
    if package == "perfedavg":
        from perfedavg.models import build_model

        model = config["model"]
        return build_model(
            model["name"], classes, channels, size, float(model["dropout"])
        )
    from fedfomo.models import build_model as fomo_model

    return fomo_model(0, classes, channels, size)


def hypernetwork(config: dict[str, Any]) -> nn.Module:
    """pFedHN's server-side hypernetwork for ``config``."""
    from pfedhn.models import HyperNetwork, build_target, embedding_dim, target_shapes

    classes, channels = DATASETS[config["dataset"]["name"]]
    model = config["model"]
    target = build_target(
        model["target"],
        channels,
        int(config["dataset"]["image_size"]),
        classes,
        with_head=config["algorithm"] != "pfedhn_pc",
        n_kernels=int(model["n_kernels"]),
    )
    n = int(config["num_clients"])
    return HyperNetwork(
        n,
        target_shapes(target),
        embed_dim=int(model["embed_dim"] or embedding_dim(n)),
        hidden_dim=int(model["hidden_dim"]),
        n_hidden=int(model["n_hidden"]),
    )


def saved_bytes(model: nn.Module, inputs: torch.Tensor, classes: int) -> int:
    """Bytes autograd keeps for backward after a forward pass and the loss."""
    own = {t.untyped_storage().data_ptr() for t in model.state_dict().values()}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    targets = torch.arange(inputs.shape[0]) % classes
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        nn.functional.cross_entropy(model(inputs), targets)
    return sum(kept.values())


def largest_layer_bytes(model: nn.Module, inputs: torch.Tensor) -> int:
    """The largest input + output bytes of one leaf module in a no-grad pass."""
    largest = 0

    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        nonlocal largest
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if isinstance(output, torch.Tensor):
            tensors.append(output)
        largest = max(largest, sum(t.numel() * t.element_size() for t in tensors))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for h in handles:
            h.remove()
    return largest


def activation_line(
    measure: Callable[[int], int],
) -> tuple[float, float]:
    """(bytes per sample, constant bytes) of ``measure(batch)``, checked at 8."""
    at2, at4, at8 = measure(2), measure(4), measure(8)
    per_sample = (at4 - at2) / 2
    constant = at2 - 2 * per_sample
    predicted = constant + 8 * per_sample
    if abs(predicted - at8) > 0.01 * at8:
        raise SystemExit(
            f"saved activations are not linear in the batch size: {at2}, {at4}, "
            f"{at8} bytes at 2, 4, 8"
        )
    return per_sample, constant


def estimate(package: str, config: dict[str, Any]) -> dict[str, Any]:
    """One preset's estimate (see the module docstring)."""
    classes, channels = DATASETS[config["dataset"]["name"]]
    size = int(config["dataset"]["image_size"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build(package, config)
    model.train()
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    copies = 3 if float(config["momentum"]) > 0 else 2  # weights, grads(, momentum)

    def measure(batch: int) -> int:
        return saved_bytes(model, torch.randn(batch, channels, size, size), classes)

    per_sample, constant = activation_line(measure)
    batch = int(config["batch_size"])
    activations = constant + batch * per_sample
    model.eval()
    eval_batch = int(config["eval_batch_size"])
    one = largest_layer_bytes(model, torch.randn(1, channels, size, size))
    state = copies * params + buffers
    return {
        "model": model_name(package, config),
        "image_size": size,
        "batch_size": batch,
        "eval_batch_size": eval_batch,
        "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "state_mib": state / MIB,
        "activations_mib": activations / MIB,
        "activations_per_sample_mib": per_sample / MIB,
        "training_estimate_mib": (state + activations) / MIB,
        "eval_lower_bound_mib": (params + buffers + eval_batch * one) / MIB,
    }


def model_name(package: str, config: dict[str, Any]) -> str:
    if package == "fedfomo":
        return "tf_cnn"
    model = config["model"]
    if package == "fedper":
        name = model["name"]
        return f"{name} (linear base)" if model.get("linear_base") else name
    if package == "pfedhn":
        suffix = " + PC head" if config["algorithm"] == "pfedhn_pc" else ""
        return f"{model['target']} target{suffix}"
    return model["name"]


def presets(package: str) -> list[str]:
    return sorted(p.stem for p in (CONF / "experiment" / package).glob("*.yaml"))


def composed(package: str, preset: str, *overrides: str) -> dict[str, Any]:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return to_plain(
            compose(package, overrides=[f"experiment={package}/{preset}", *overrides])
        )


def rows_for(package: str) -> list[dict[str, Any]]:
    """One estimate per distinct (model, image size, batch sizes) of the presets."""
    groups: dict[tuple, dict[str, Any]] = {}
    settings = [(preset, []) for preset in presets(package)]
    settings += [(preset, extra) for p, preset, extra in VARIANTS if p == package]
    for preset, extra in settings:
        config = composed(package, preset, *extra)
        preset = " ".join([preset, *extra])
        key = (
            model_name(package, config),
            config["dataset"]["name"],
            int(config["dataset"]["image_size"]),
            int(config["batch_size"]),
            int(config["eval_batch_size"]),
            config["algorithm"] in ("pfedhn", "pfedhn_pc"),  # a hypernetwork
        )
        if key in groups:
            groups[key]["presets"].append(preset)
            continue
        row = {"package": package, "dataset": config["dataset"]["name"]}
        row |= estimate(package, config)
        row["presets"] = [preset]
        if key[-1]:
            hn = hypernetwork(config)
            hn_bytes = sum(p.numel() * p.element_size() for p in hn.parameters())
            momentum = 1 if float(config["hn"]["momentum"]) > 0 else 0
            row["server_hn_state_mib"] = (2 + momentum) * hn_bytes / MIB
        groups[key] = row
    return list(groups.values())


def mib(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| package | model | data, px | batch | params (M) | weights + grads "
        "(+ momentum) MiB | saved activations MiB (per sample) | training "
        "estimate MiB | eval batch: lower bound MiB | presets |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        hn = (
            f"; server HN {mib(r['server_hn_state_mib'])} MiB"
            if "server_hn_state_mib" in r
            else ""
        )
        lines.append(
            f"| {r['package']} | {r['model']} | {r['dataset']}, {r['image_size']} | "
            f"{r['batch_size']} | {r['parameters_m']:.2f} | {mib(r['state_mib'])} | "
            f"{mib(r['activations_mib'])} ({r['activations_per_sample_mib']:.2f}) | "
            f"**{mib(r['training_estimate_mib'])}** | {r['eval_batch_size']}: "
            f"{mib(r['eval_lower_bound_mib'])}{hn} | {', '.join(r['presets'])} |"
        )
    return head + "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", choices=PACKAGES, action="append")
    parser.add_argument("--out", help="write the rows as JSON")
    args = parser.parse_args()
    rows = [row for package in args.package or PACKAGES for row in rows_for(package)]
    print(markdown(rows))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
