"""Device profiles: schema, loading and listing (the YAML files live in the repository's ``devices/``).

A profile (``devices/<id>.yaml``, installed with the package as ``edgescale/devices/``)
holds a device's peak compute per precision, memory bandwidth (peak and effective),
cache, RAM, ISA features, runtimes and the priors the latency predictor starts from.
Every number is a :class:`Quantity` that carries its *kind* — ``measured`` (by someone,
with the source), ``vendor`` (a data sheet), ``derived`` (with its formula) or
``assumed`` (with its formula or reasoning) — and its source. Assumed numbers are
flagged wherever a prediction uses them.

Calibration anchors (used to fit efficiencies) and validation anchors (held out, used
only to check predictions) are kept apart.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgescale.config import ExecutionProvider, Name, Strict, builtin_dir
from edgescale.errors import UserError
from edgescale.yamlfile import parse, read_yaml

Kind = Literal["measured", "vendor", "derived", "assumed"]


class Quantity(Strict):
    value: float = Field(gt=0, description="the number, in the unit its field name states")
    kind: Kind = Field(description="measured | vendor | derived | assumed")
    source: str = Field(min_length=3, description="where it comes from: a page, a repo@commit:path, an issue")
    formula: str | None = Field(None, description="how it was derived or what the assumption is")

    @model_validator(mode="after")
    def _formula_when_needed(self) -> Quantity:
        if self.kind in ("derived", "assumed") and not self.formula:
            raise ValueError(f"a {self.kind} number needs its formula")
        return self


class CoreCluster(Strict):
    core: str = Field(description="core name, e.g. cortex-a76")
    count: int = Field(ge=1, description="cores in the cluster")
    freq_ghz: float = Field(gt=0, description="peak clock")


class CPU(Strict):
    clusters: list[CoreCluster] = Field(min_length=1, description="core clusters, big first")
    isa: list[
        Literal[
            "neon",
            "fp16",
            "dotprod",
            "i8mm",
            "bf16",
            "sve",
            "sve2",
            "avx2",
            "avx512f",
            "avx512_vnni",
            "avx_vnni",
            "amx",
        ]
    ] = Field(description="ISA features relevant to low-bit inference")
    last_level_cache_mb: Quantity = Field(description="last-level cache shared by the cores, MB")


class Peak(Strict):
    fp32: Quantity = Field(description="whole-CPU fp32 peak, GOP/s")
    fp16: Quantity | None = Field(None, description="fp16 peak, GOP/s")
    int8: Quantity | None = Field(None, description="int8 peak (dot-product or VNNI), GOP/s")


class Memory(Strict):
    type: str = Field(description="e.g. LPDDR4X-4267, 32-bit")
    capacity_gb: Quantity = Field(description="physical RAM, GB")
    usable_gb: Quantity = Field(description="RAM a model may use (OS and app limits), GB")
    peak_gbps: Quantity = Field(description="theoretical DRAM bandwidth, GB/s")
    effective_gbps: Quantity | None = Field(None, description="measured or assumed achievable bandwidth, GB/s")


class Runtime(Strict):
    runtime: Literal["onnxruntime", "llama.cpp", "mlc", "tflite", "qnn", "coreml", "tensorrt"] = Field(
        description="inference runtime"
    )
    execution_providers: list[ExecutionProvider] = Field(default_factory=list, description="ORT EP names, verbatim")


class Efficiency(Strict):
    bw: Quantity = Field(description="share of peak bandwidth decode achieves (0-1)")
    compute: Quantity = Field(description="share of peak compute prefill achieves (0-1)")
    overhead_ms_per_token: Quantity | None = Field(
        None, description="fixed cost per decoded token, ms: a GPU's kernel-launch floor (fitted where anchors exist)"
    )
    dequant_ops: Quantity | None = Field(
        None,
        description="ops per sub-8-bit weight to load, unpack and scale it once per pass, beside the 2 of its "
        "multiply-add; priced at the compute rate, so in-order cores can be compute-bound on it (default 4)",
    )

    @model_validator(mode="after")
    def _fractions(self) -> Efficiency:
        for name in ("bw", "compute"):
            if getattr(self, name).value > 1:
                raise ValueError(f"{name} efficiency must be <= 1, got {getattr(self, name).value}")
        return self


class Anchor(Strict):
    renamed_keys: ClassVar[dict[str, str]] = {"prompt_tokens": "prompt_len"}  # deprecated spelling, for one release

    workload: Literal["decode", "prefill"] = Field(description="what was timed")
    model: str = Field(description="model and quantization, e.g. 'Llama 2 7B Q4_0'")
    params: float = Field(gt=0, description="parameters (total)")
    bits_per_weight: float = Field(gt=0, le=32, description="average stored bits per weight incl. scales")
    tokens_per_s: float = Field(gt=0, description="measured throughput")
    prompt_len: int | None = Field(None, ge=1, description="prefill prompt length (tokens)")
    arch: str | None = Field(None, description="a shipped layout (edgescale predict --arch): real KV heads and head")
    embed_bits: float | None = Field(None, gt=0, le=32, description="bits of the embedding table, when it differs")
    compute: Literal["int8", "fp16", "fp32"] | None = Field(
        None, description="the precision the kernels compute at, when the bits alone do not say (bf16 on fp32)"
    )
    runtime: str = Field(description="runtime and backend")
    source: str = Field(min_length=3, description="where the measurement was published")


class DeviceProfile(Strict):
    schema_version: Literal[1] = 1
    id: Name = Field(description="file stem; lowercase, unique")
    name: str = Field(description="display name")
    device_class: Literal["phone", "sbc", "embedded_gpu", "laptop", "desktop", "host"] = Field(
        alias="class", description="phone | sbc | embedded_gpu | laptop | desktop | host"
    )
    aliases: list[str] = Field(default_factory=list, description="other names (e.g. Qualcomm AI Hub device names)")
    soc: str = Field(description="system on chip or CPU model")
    compute_unit: Literal["cpu", "gpu"] = Field(
        "cpu", description="what peak_gops, efficiency and the anchors describe: the CPU cores, or the GPU"
    )
    cpu: CPU
    peak_gops: Peak
    memory: Memory
    power_w: Quantity = Field(description="power while running inference, W")
    runtimes: list[Runtime] = Field(min_length=1, description="runtimes and execution providers")
    efficiency: Efficiency = Field(description="predictor priors (replaced by fitted values after calibration)")
    calibration: list[Anchor] = Field(default_factory=list, description="anchors used to fit efficiencies")
    validation: list[Anchor] = Field(default_factory=list, description="held-out anchors, only for checking")
    notes: str = Field("", description="caveats")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def decode_gbps(self) -> float:
        """Bandwidth decode streams weights at: peak × the (prior or fitted) bandwidth efficiency."""
        return self.memory.peak_gbps.value * self.efficiency.bw.value

    def assumed_fields(self) -> list[str]:
        """Dotted paths of every assumed number, so predictions can flag them."""
        out = []

        def walk(obj: BaseModel, prefix: str) -> None:
            for name in type(obj).model_fields:
                value = getattr(obj, name)
                path = f"{prefix}{name}"
                if isinstance(value, Quantity):
                    if value.kind == "assumed":
                        out.append(path)
                elif isinstance(value, BaseModel):
                    walk(value, path + ".")

        walk(self, "")
        return out


def load_device_file(path: Path) -> DeviceProfile:
    profile = parse(DeviceProfile, read_yaml(path), path)
    if profile.id != Path(path).stem:
        raise UserError(f"id {profile.id!r} must equal the file stem {Path(path).stem!r}", file=path, field="id")
    return profile


def device_files() -> tuple[tuple[Path, int, int], ...]:
    """The shipped profile files with their mtime and size: the cache key of the loaded profiles."""
    files = sorted(builtin_dir("devices").glob("*.yaml"))
    return tuple((p, p.stat().st_mtime_ns, p.stat().st_size) for p in files)


def load_devices() -> dict[str, DeviceProfile]:
    """The shipped profiles as written, with their priors (fitted ones: :mod:`edgescale.bench.devices`).

    Read once per process while the files are unchanged (a run asks for them per variant;
    the profiles are immutable, so sharing them is safe)."""
    return dict(read_devices(device_files()))


@functools.cache
def read_devices(files: tuple[tuple[Path, int, int], ...]) -> dict[str, DeviceProfile]:
    return {p.stem: load_device_file(p) for p, _, _ in files}


def find_device(name: str) -> DeviceProfile:
    """A shipped profile by id, or a profile file by path, as written (the fitted one:
    :func:`edgescale.bench.devices.get_device`)."""
    if name.endswith((".yaml", ".yml")):
        return load_device_file(Path(name))
    devices = load_devices()
    if name not in devices:
        raise UserError(f"unknown device {name!r}; allowed: {', '.join(sorted(devices))}", field="--device")
    return devices[name]
