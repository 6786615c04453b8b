"""A stand-in accelerator for CPU-only machines: CUDA's device checks, CPU values.

Code under test is given ``ACCELERATOR`` (``torch.device("meta")``) as its training
device. Inside :class:`FakeAccelerator`, every tensor placed on that device (by
``.to(device)``, a factory with ``device=``, or ``module.to(device)``) is an
:class:`OnAccelerator`: a CPU tensor that reports the stand-in device. Every
operator then runs twice:

* once under PyTorch's ``FakeTensorMode`` on fake tensors, the stand-in ones as
  fake *CUDA* tensors and the others as fake CPU tensors, so PyTorch's own device
  checks decide whether the operator would run on a GPU (a CUDA tensor meeting a
  CPU tensor raises "Expected all tensors to be on the same device"; CPU scalars
  and CPU index tensors are allowed, as on CUDA);
* once on the CPU values, so results, ``float(loss)`` and ``int(correct)`` are
  real and the code runs exactly as it would on the CPU.

Host syncs (``.item()``) and data-dependent shapes cannot run on fake tensors; for
those operators the check falls back to "no non-scalar CPU tensor meets a
stand-in tensor". ``torch.device("meta")`` is used because the autograd engine and
``Tensor.to`` need no driver for it; the device checks are CUDA's all the same.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensorMode,
)
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

ACCELERATOR = torch.device("meta")
_CUDA = torch.device("cuda", 0)
_CPU = torch.device("cpu")


class MixedDeviceError(RuntimeError):
    """An operator met tensors of the stand-in accelerator and of the CPU."""


class OnAccelerator(torch.Tensor):
    """A CPU tensor (``value``) that code under test sees on ``ACCELERATOR``."""

    value: torch.Tensor

    @staticmethod
    def __new__(cls, value: torch.Tensor) -> OnAccelerator:
        out = torch.Tensor._make_wrapper_subclass(
            cls,
            value.shape,
            strides=value.stride(),
            storage_offset=value.storage_offset(),
            dtype=value.dtype,
            layout=value.layout,
            device=ACCELERATOR,
            requires_grad=value.requires_grad,
        )
        out.value = value
        return out

    def __repr__(self) -> str:  # type: ignore[override]
        return f"OnAccelerator({self.value!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        raise RuntimeError(f"{func} on an OnAccelerator outside FakeAccelerator")


def _is_standin(value: Any) -> bool:
    if isinstance(value, torch.device):
        return value.type == ACCELERATOR.type
    return isinstance(value, str) and value.split(":")[0] == ACCELERATOR.type


# Factories that build a tensor from host data: with a "meta" device they skip
# the dispatcher (no data to copy), so they are redirected at the Python level.
_HOST_FACTORIES = (torch.tensor, torch.as_tensor, torch.asarray)


class _HostFactories(TorchFunctionMode):
    """``torch.tensor(data, device=ACCELERATOR)`` as ``torch.tensor(data).to(...)``."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in _HOST_FACTORIES and _is_standin(kwargs.get("device")):
            return func(*args, **{**kwargs, "device": _CPU}).to(ACCELERATOR)
        return func(*args, **kwargs)


class FakeAccelerator(TorchDispatchMode):
    """Run code on the CPU while checking its device placement as CUDA would.

    ``torch.tensor(data, device=ACCELERATOR)`` and its kin are redirected
    through ``.to`` (with a meta device they would skip the dispatcher). While
    active, cuDNN is off (its kernels exist on CUDA only; the device rules
    are the same without it), ``module.to(device)`` replaces parameters instead
    of assigning ``.data`` (a wrapper tensor cannot be assigned that way) and the
    autograd engine runs on the calling thread. Everything is restored on exit.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fake = FakeTensorMode()
        self.checked = 0  # operators checked on fake tensors
        self._stack = ExitStack()

    def __enter__(self) -> FakeAccelerator:
        stack = self._stack
        saved_cudnn = torch.backends.cudnn.enabled
        saved_overwrite = torch.__future__.get_overwrite_module_params_on_conversion()
        torch.backends.cudnn.enabled = False
        torch.__future__.set_overwrite_module_params_on_conversion(True)
        stack.callback(setattr, torch.backends.cudnn, "enabled", saved_cudnn)
        stack.callback(
            torch.__future__.set_overwrite_module_params_on_conversion,
            saved_overwrite,
        )
        stack.enter_context(torch.autograd.set_multithreading_enabled(False))
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter")
        stack.enter_context(_HostFactories())
        super().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self._stack.close()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        leaves = pytree.tree_leaves((args, kwargs))
        if not any(isinstance(a, OnAccelerator) or _is_standin(a) for a in leaves):
            return func(*args, **kwargs)
        fake_out = self._check(func, args, kwargs, leaves)
        real_args, real_kwargs = pytree.tree_map(_to_real, (args, kwargs))
        out = func(*real_args, **real_kwargs)
        flat_out, spec = pytree.tree_flatten(out)
        if fake_out is None:  # a sync or a data-dependent shape: follow the inputs
            on = any(isinstance(a, OnAccelerator) for a in leaves) or any(
                _is_standin(a) for a in leaves
            )
            placed = [on] * len(flat_out)
        else:
            placed = [
                isinstance(f, torch.Tensor) and f.device.type == "cuda"
                for f in pytree.tree_leaves(fake_out)
            ]
        wrapped = [
            OnAccelerator(o) if isinstance(o, torch.Tensor) and p else o
            for o, p in zip(flat_out, placed, strict=True)
        ]
        if _returns_first_argument(func) and isinstance(args[0], OnAccelerator):
            return args[0]  # in place: the caller's tensor, not a new wrapper
        return pytree.tree_unflatten(wrapped, spec)

    def _check(self, func, args, kwargs, leaves):  # type: ignore[no-untyped-def]
        """Run ``func`` on fake tensors; ``None`` where fake tensors cannot."""

        def to_fake(a: Any) -> Any:
            if isinstance(a, OnAccelerator):
                with self.fake:
                    return torch.empty_strided(
                        a.shape, a.stride(), dtype=a.dtype, device=_CUDA
                    )
            if isinstance(a, torch.Tensor):
                return self.fake.from_tensor(a)
            return _CUDA if _is_standin(a) else a

        fake_args, fake_kwargs = pytree.tree_map(to_fake, (args, kwargs))
        try:
            with self.fake:
                out = func(*fake_args, **fake_kwargs)
        except (DataDependentOutputException, DynamicOutputShapeException):
            cpu = [
                a
                for a in leaves
                if isinstance(a, torch.Tensor)
                and not isinstance(a, OnAccelerator)
                and a.dim() > 0
            ]
            if cpu and any(isinstance(a, OnAccelerator) for a in leaves):
                raise MixedDeviceError(
                    f"{func}: a CPU tensor of shape {tuple(cpu[0].shape)} meets "
                    "accelerator tensors"
                ) from None
            return None
        self.checked += 1
        return out


def _to_real(a: Any) -> Any:
    if isinstance(a, OnAccelerator):
        return a.value
    return _CPU if _is_standin(a) else a


def _returns_first_argument(func: torch._ops.OpOverload) -> bool:
    returns = func._schema.returns
    if len(returns) != 1 or returns[0].alias_info is None:
        return False
    first = func._schema.arguments[0].alias_info
    return (
        first is not None
        and first.is_write
        and first.before_set == returns[0].alias_info.before_set
    )


@contextmanager
def fake_accelerator() -> Iterator[FakeAccelerator]:
    """``with fake_accelerator() as mode:`` run code whose device is ``ACCELERATOR``."""
    with FakeAccelerator() as mode:
        yield mode


def host(value: Any) -> Any:
    """The CPU tensor(s) behind stand-in tensors, for comparisons outside the mode."""
    return pytree.tree_map(
        lambda a: a.value if isinstance(a, OnAccelerator) else a, value
    )
