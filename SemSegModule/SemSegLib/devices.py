"""Choosing the torch device (CUDA, else Apple MPS, else CPU, unless the caller says otherwise) and the reduced
precision it computes fast."""

from __future__ import annotations

import torch

from .errors import InputError


def resolve_device(name: str = "auto") -> torch.device:
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device 'cuda' was requested but PyTorch sees no CUDA GPU; use --device auto or cpu.")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("device 'mps' was requested but Apple MPS is not available; use --device auto or cpu.")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise InputError(f"unknown device {name!r}; use auto, cpu, cuda or mps.") from e


def cpu_has_amx_bf16() -> bool:
    """Does this CPU have AMX units for bfloat16 (Intel Xeon of the 4th generation, Sapphire Rapids, and later)?"""
    capabilities = getattr(torch.cpu, "get_capabilities", None)  # public in PyTorch 2.13 (earlier: not checked)
    if capabilities is not None:
        return bool(capabilities().get("amx_bf16", False))
    amx_tile = getattr(torch.cpu, "_is_amx_tile_supported", None)  # older PyTorch: every AMX CPU has bfloat16
    return bool(amx_tile and amx_tile())


def autocast_dtype(device: torch.device, mixed_precision: bool = True, training: bool = False) -> torch.dtype | None:
    """The reduced precision to run the network in on `device`, or None for float32.

    float16 on CUDA, for training (with scaled gradients) and prediction. On a CPU with AMX-BF16 units,
    bfloat16 for prediction only: there a stack took 0.90-0.93x the time of float32 with the same labels (T2
    within 0.0004 on both benchmark sets, 8 seeds each), while training in bfloat16, 0.79x the time, cost
    dsb2018-fluo T2 0.002 (6 of 8 seeds lower; bench/RESULTS.md, session 27). Other CPUs stay in float32:
    without AMX bfloat16 was not measured, and a CPU without any bfloat16 instructions emulates it. Apple MPS
    too (not measured).
    """
    if not mixed_precision:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and not training and cpu_has_amx_bf16():
        return torch.bfloat16
    return None


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        fast = ", predicts in bfloat16 on AMX" if autocast_dtype(device) == torch.bfloat16 else ""
        return f"cpu ({torch.get_num_threads()} threads{fast})"
    return device.type
