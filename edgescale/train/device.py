"""Where a training run executes and what that device lets it do (``training.device``).

The decisions are a pure function of the device kind and its capabilities
(:func:`decide`), so CPU tests cover the CUDA and MPS choices; only the probes
(:func:`resolve_device`, :func:`device_setup`) ask torch about this machine.

- **CPU** (the default): fp32, no autocast (``torch.autocast(enabled=False)``, a real
  no-op context), fused AdamW as before, no pinned memory. A CPU run trains, hashes and
  keys exactly as it did before this module existed.
- **CUDA**: bf16 autocast when the GPU supports it (``torch.cuda.is_bf16_supported()``:
  Ampere and later). bf16 has fp32's exponent range, so no loss scaling is needed; fp16
  would need a GradScaler, so a GPU without bf16 trains in fp32 (with TF32 matmuls)
  instead. TF32 on, fused AdamW, host batches in pinned memory copied ``non_blocking``.
  Parameters and optimizer moments stay fp32 (master weights); only the matmuls run in bf16.
- **MPS** (Apple): fp32, no autocast. MPS autocast covers fewer ops than CUDA's, fp16
  would need loss scaling edgescale does not do, and bf16 needs macOS 14 and recent
  chips; fp32 keeps an Apple run's losses comparable with a CPU run's. Fused AdamW
  (torch ships an MPS kernel); no pinned memory (unified memory: nothing to pin).

:func:`device_peak` gives the dense bf16 peak of a known GPU (from NVIDIA's datasheets,
cited per row), a measured fp32 matmul peak on CPU, and ``None`` ("unknown peak") for
anything else: an MFU is never computed against a guessed number.
"""

from __future__ import annotations

import contextlib
import functools
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from edgescale.errors import UserError

KINDS = ("cpu", "cuda", "mps")
FIELD = "training.device"


@dataclass(frozen=True)
class DeviceSetup:
    """How one training run uses its device (see the module docstring for why each choice)."""

    device: str  # "cpu" | "cuda" | "mps": resolved, never "auto"
    autocast_dtype: str | None = None  # "bfloat16" or None (fp32 throughout)
    tf32: bool = False  # TF32 matmuls for what stays fp32 (CUDA only)
    fused_adamw: bool = True  # torch's fused AdamW kernel (CPU: today's optimizer)
    pin_memory: bool = False  # host batches in page-locked memory ...
    non_blocking: bool = False  # ... so the copy to the device overlaps compute
    compile: bool = False  # torch.compile the training forward
    compile_backend: str = "inductor"  # tests pass a cheaper real backend (aot_eager)
    notes: tuple[str, ...] = ()  # why, one line per decision that is not the CPU default

    @property
    def dtype(self) -> torch.dtype | None:
        return getattr(torch, self.autocast_dtype) if self.autocast_dtype else None

    def key(self) -> dict:
        """What this setup adds to a training key: nothing on CPU without compile (so CPU keys
        stay as they were); the device and precision elsewhere, since its losses differ."""
        parts: dict = {}
        if self.device != "cpu":
            parts |= {"device": self.device, "autocast": self.autocast_dtype, "tf32": self.tf32}
        if self.compile:
            parts["compile"] = self.compile_backend  # fused kernels change the last bits of every loss
        return parts

    def to_dict(self) -> dict:
        return {
            "device": self.device,
            "autocast_dtype": self.autocast_dtype,
            "tf32": self.tf32,
            "fused_adamw": self.fused_adamw,
            "pin_memory": self.pin_memory,
            "compile": self.compile,
        }


def pick_device(requested: str, cuda: bool, mps: bool, field: str = FIELD) -> str:
    """The device kind for ``requested`` given what this machine has; a UserError naming
    ``field`` (``training.device``) when an absent one is asked for."""
    if requested == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if requested not in KINDS:
        raise UserError(f"unknown device {requested!r}; one of auto, {', '.join(KINDS)}", field=field)
    if (requested == "cuda" and not cuda) or (requested == "mps" and not mps):
        raise UserError(
            f"{requested} was asked for but torch {torch.__version__} sees no {requested} device here; "
            f"set {field} to cpu or auto",
            field=field,
        )
    return requested


def decide(kind: str, bf16_supported: bool = False, compile: bool = False) -> DeviceSetup:
    """The setup for a device ``kind`` with the given capabilities (pure: no torch probes)."""
    if kind == "cuda":
        notes = ["bf16 autocast (fp32 master weights)" if bf16_supported else "fp32: this GPU has no bf16"]
        notes += ["TF32 matmuls", "fused AdamW", "pinned host batches, non_blocking copies"]
        return DeviceSetup(
            "cuda",
            "bfloat16" if bf16_supported else None,
            tf32=True,
            pin_memory=True,
            non_blocking=True,
            compile=compile,
            notes=tuple(notes),
        )
    if kind == "mps":
        why = "fp32 on mps: partial autocast coverage, fp16 needs loss scaling, bf16 needs macOS 14"
        return DeviceSetup("mps", None, compile=compile, notes=(why, "fused AdamW"))
    if kind == "cpu":
        return DeviceSetup("cpu", None, compile=compile)
    raise UserError(f"unknown device {kind!r}; one of {', '.join(KINDS)}", field=FIELD)


def _has_mps() -> bool:
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def resolve_device(requested: str = "auto", field: str = FIELD) -> torch.device:
    """The torch device ``training.device: requested`` trains on here (UserError if absent)."""
    return torch.device(pick_device(requested, torch.cuda.is_available(), _has_mps(), field))


def device_setup(cfg, field: str = FIELD) -> DeviceSetup:
    """The setup for a :class:`~edgescale.config.TrainingConfig` (or any config with ``device`` and
    ``compile``) on this machine."""
    kind = resolve_device(cfg.device, field).type
    bf16 = kind == "cuda" and torch.cuda.is_bf16_supported()
    return decide(kind, bf16_supported=bf16, compile=cfg.compile)


def autocast(setup: DeviceSetup) -> torch.autocast:
    """The forward-and-loss context: bf16 autocast where the setup says so, else a real
    ``torch.autocast(enabled=False)`` (on CPU: fp32 exactly as without it)."""
    dtype = setup.dtype
    return torch.autocast(setup.device, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


@contextlib.contextmanager
def configured(setup: DeviceSetup) -> Iterator[None]:
    """TF32 for the run's duration, restored after (process-wide flags: never left changed)."""
    if setup.device != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = setup.tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def to_device(batch: torch.Tensor, setup: DeviceSetup) -> torch.Tensor:
    """A host batch on the run's device: pinned first and copied without blocking where the setup
    says so, so the copy overlaps the previous step's kernels. On CPU the tensor itself."""
    if setup.device == "cpu":
        return batch
    if setup.pin_memory:
        batch = batch.pin_memory()
    return batch.to(setup.device, non_blocking=setup.non_blocking)


# Dense (no 2:4 sparsity) BF16 tensor-core peaks. NVIDIA's datasheets print the sparse figure with an
# asterisk; the dense one is half of it. Matched in order on torch.cuda.get_device_name() (e.g.
# "NVIDIA H100 80GB HBM3" is the SXM part, "NVIDIA H100 PCIe", "NVIDIA A100-SXM4-80GB").
_H100 = "NVIDIA H100 Tensor Core GPU datasheet, https://www.nvidia.com/en-us/data-center/h100/ (BF16 Tensor Core, "
_H200 = "NVIDIA H200 Tensor Core GPU datasheet, https://www.nvidia.com/en-us/data-center/h200/ (BF16 Tensor Core, "
GPU_PEAKS: tuple[tuple[str, str, float, str], ...] = (
    (r"H100.*PCIe", "H100 PCIe", 756e12, _H100 + "H100 PCIe: 1,513 TFLOPS with sparsity)"),
    (r"H100 NVL", "H100 NVL", 835.5e12, _H100 + "H100 NVL: 1,671 TFLOPS with sparsity)"),
    (r"H100", "H100 SXM", 989.5e12, _H100 + "H100 SXM: 1,979 TFLOPS with sparsity)"),
    (r"H200 NVL", "H200 NVL", 835.5e12, _H200 + "H200 NVL: 1,671 TFLOPS with sparsity)"),
    (r"H200", "H200 SXM", 989.5e12, _H200 + "H200 SXM: 1,979 TFLOPS with sparsity)"),
    (
        r"A100",
        "A100",
        312e12,
        "NVIDIA A100 Tensor Core GPU datasheet, https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/"
        "a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf (BF16 Tensor Core: 312 TFLOPS dense)",
    ),
    (
        r"L40S",
        "L40S",
        362.05e12,
        "NVIDIA L40S datasheet, https://www.nvidia.com/en-us/data-center/l40s/ (BF16 Tensor Core: 362.05 | 733 "
        "TFLOPS with sparsity)",
    ),
    (
        r"\bL4\b",
        "L4",
        121e12,
        "NVIDIA L4 Tensor Core GPU datasheet, https://www.nvidia.com/en-us/data-center/l4/ (BF16 Tensor Core: "
        "242 TFLOPS with sparsity)",
    ),
    (
        r"\bA10\b",  # not the A10G (AWS), whose peak NVIDIA does not publish
        "A10",
        125e12,
        "NVIDIA A10 Tensor Core GPU datasheet, https://www.nvidia.com/en-us/data-center/products/a10-gpu/ "
        "(BF16 Tensor Core: 125 TFLOPS dense, 250 with sparsity)",
    ),
)


def gpu_peak(name: str) -> tuple[float | None, str, str]:
    """(dense bf16 FLOP/s, what, source) for a CUDA device name; None for a GPU not in the table."""
    for pattern, what, flops, source in GPU_PEAKS:
        if re.search(pattern, name):
            return flops, f"{what} dense BF16 tensor-core peak", source
    return None, f"unknown peak ({name}: not in edgescale.train.device.GPU_PEAKS)", "none"


@functools.lru_cache(maxsize=8)
def cpu_matmul_peak(threads: int, n: int = 1024, repeats: int = 20) -> float:
    """Measured fp32 matmul FLOP/s at ``threads`` (once per process and thread count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(3):
            a @ b
        t = time.perf_counter()
        for _ in range(repeats):
            a @ b
        return 2 * n**3 * repeats / (time.perf_counter() - t)
    finally:
        torch.set_num_threads(before)


def device_peak(device: torch.device | str) -> tuple[float | None, str, str]:
    """(peak FLOP/s, what it is, its source) for a training device: a known GPU's dense bf16
    peak from its datasheet, this CPU's measured fp32 matmul peak, or None ("unknown peak")."""
    device = torch.device(device)
    if device.type == "cpu":
        threads = torch.get_num_threads()
        what = f"fp32 matmul peak, 1024x1024, {threads} threads"
        return cpu_matmul_peak(threads), what, "measured in this process (edgescale.train.device.cpu_matmul_peak)"
    if device.type == "cuda":
        return gpu_peak(torch.cuda.get_device_name(device))
    return None, f"unknown peak ({device.type}: no published dense bf16 figure in the table)", "none"
