"""A device profile of the machine edgescale runs on, and measured anchors added to it.

The workflow for a user's own board (docs/devices.md, "A profile from your own board"):
``edgescale calibrate --quick --device-name NAME`` writes ``NAME.yaml`` in the schema of
``devices/*.yaml`` (:mod:`edgescale.profiles`) from this machine's calibration
(:mod:`edgescale.bench.calibrate`) and ``/proc``/sysfs; the file is carried back and used
as ``--device PATH``; ``edgescale bench MODEL.onnx --device-name NAME`` appends the
model's measured decode and prefill as calibration anchors, from which the predictor
refits the profile's efficiencies (:func:`edgescale.bench.anchor_fit.calibrated`) every time
the profile is loaded. The file keeps the priors; the fitted values are never written
back, so a later anchor refits from the same prior.
"""

from __future__ import annotations

import math
import platform
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from edgescale.atomic import write_bytes
from edgescale.bench.anchor_fit import calibrated
from edgescale.bench.bytes import tensor_bytes
from edgescale.bench.calibrate import HostCalibration
from edgescale.compress.feasibility import host_target
from edgescale.errors import UserError
from edgescale.ortenv import import_onnxruntime
from edgescale.profiles import Anchor, DeviceProfile, load_device_file
from edgescale.yamlfile import parse, read_yaml

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")  # edgescale.config_models.Name: a profile id is a file stem
# Arm's CPU part numbers (implementer 0x41), as Linux names them in arch/arm64/include/asm/cputype.h.
ARM_PARTS = {
    "0xd03": "cortex-a53", "0xd04": "cortex-a35", "0xd05": "cortex-a55", "0xd07": "cortex-a57",
    "0xd08": "cortex-a72", "0xd09": "cortex-a73", "0xd0a": "cortex-a75", "0xd0b": "cortex-a76",
    "0xd0c": "neoverse-n1", "0xd0d": "cortex-a77", "0xd40": "neoverse-v1", "0xd41": "cortex-a78",
    "0xd42": "cortex-a78ae", "0xd44": "cortex-x1", "0xd46": "cortex-a510", "0xd47": "cortex-a710",
    "0xd48": "cortex-x2", "0xd49": "neoverse-n2", "0xd4b": "cortex-a78c", "0xd4d": "cortex-a715",
    "0xd4e": "cortex-x3",
}  # fmt: skip
# A placeholder power per class (W), flagged ``assumed``: nothing here can measure power.
POWER_PLACEHOLDER_W = {"host": 65.0, "desktop": 65.0, "laptop": 28.0, "sbc": 7.0, "phone": 5.0, "embedded_gpu": 15.0}


@dataclass(frozen=True)
class CpuInfo:
    model: str
    clusters: tuple[tuple[str, int, float], ...]  # (core name, count, GHz; 0 when not readable)


def read_cpuinfo(text: str, sysfs: Path = Path("/sys/devices/system/cpu")) -> CpuInfo:
    """CPU model and core clusters from ``/proc/cpuinfo`` text (x86 ``model name``; Arm ``CPU part``),
    clocks from sysfs ``cpufreq`` (kHz) or the x86 ``cpu MHz`` line."""
    cpus: list[dict[str, str]] = []
    header: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = (s.strip() for s in line.partition(":"))
        if key == "processor":
            cpus.append({})
        elif key:
            (cpus[-1] if cpus else header)[key] = value
    # x86: "model name" per CPU; Arm: a board "Model" (or "Hardware") line, often after the last CPU's block
    names = [c.get(k, "") for k in ("model name", "Model", "Hardware") for c in (*cpus, header)]
    model = next((n for n in names if n), "")
    groups: dict[tuple[str, float], int] = {}
    for i, c in enumerate(cpus or [header]):
        core = c.get("model name") or ARM_PARTS.get(c.get("CPU part", "").lower(), c.get("CPU part", "cpu"))
        key = (core, _clock_ghz(sysfs / f"cpu{i}", c))
        groups[key] = groups.get(key, 0) + 1
    clusters = tuple(sorted(((k, n, f) for (k, f), n in groups.items()), key=lambda x: -x[2]))
    return CpuInfo(model or clusters[0][0], clusters)


def _clock_ghz(cpu_dir: Path, fields: dict[str, str]) -> float:
    try:
        return int((cpu_dir / "cpufreq" / "cpuinfo_max_freq").read_text()) / 1e6
    except (OSError, ValueError):
        pass
    try:
        return float(fields.get("cpu MHz", "0")) / 1000
    except ValueError:
        return 0.0


def _llc_mb(sysfs: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> tuple[float, int] | None:
    """(size MB, level) of the highest cache level sysfs lists, or None."""
    best = None
    for d in sorted(sysfs.glob("index*")):
        try:
            level, size = int((d / "level").read_text()), (d / "size").read_text().strip().upper()
        except (OSError, ValueError):
            continue
        mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1:], 1)
        mb = int(size.rstrip("KMG")) * mult / 2**20
        if best is None or level > best[1]:
            best = (mb, level)
    return best


def check_name(name: str, flag: str = "--device-name") -> str:
    if not NAME_PATTERN.match(name) or len(name) > 64:
        raise UserError(f"{name!r} is not a profile id: lowercase letters, digits, '_', '.', '-'", field=flag)
    return name


def default_class() -> str:
    return "sbc" if platform.machine().lower() in ("aarch64", "arm64", "armv7l") else "host"


@dataclass(frozen=True)
class _Sources:
    """How each number of a written profile is labelled."""

    host: str
    date: str
    calibration: str  # the calibration run, for numbers it measured

    def measured(self, value: float, what: str) -> dict:
        return {"value": round(value, 3), "kind": "measured", "source": f"{self.calibration}: {what}"}

    def read(self, value: float, where: str) -> dict:
        return {"value": round(value, 3), "kind": "measured", "source": f"{where} on {self.host} {self.date}"}

    @staticmethod
    def assumed(value: float, formula: str) -> dict:
        return {"value": value, "kind": "assumed", "formula": formula, "source": "edgescale assumption"}


def _cpu(src: _Sources, cpu: CpuInfo, cpuinfo: Path, meminfo: Path) -> dict:
    llc = _llc_mb()
    return {
        "clusters": [{"core": c, "count": n, "freq_ghz": f or 1.0} for c, n, f in cpu.clusters],
        "isa": sorted(host_target(cpuinfo, meminfo).isa),
        "last_level_cache_mb": src.read(llc[0], f"sysfs cpu0 cache level {llc[1]}")
        if llc
        else src.assumed(2.0, "sysfs lists no cache; 2 MB, the shared L2/L3 of a typical Arm SBC"),
    }


def _memory(src: _Sources, cal: HostCalibration, meminfo: Path) -> dict:
    lines = (ln.partition(":") for ln in meminfo.read_text().splitlines())
    kib = {k: int(v.split()[0]) for k, _, v in lines if v.strip()}
    stream = cal.streaming_gbps("fp32")
    return {
        "type": "not read (edgescale calibrate measures bandwidth, not the DRAM part)",
        "capacity_gb": src.read(kib["MemTotal"] * 1024 / 1e9, "/proc/meminfo MemTotal"),
        "usable_gb": src.read(kib.get("MemAvailable", kib["MemTotal"]) * 1024 / 1e9, "/proc/meminfo MemAvailable"),
        "peak_gbps": src.measured(max(r for _, r in stream), "fastest fp32 GEMV weight streaming (cache regime)"),
        "effective_gbps": src.measured(
            stream[-1][1], f"fp32 GEMV streaming of a {stream[-1][0] / 2**20:.0f} MiB working set"
        ),
    }


def own_profile(
    cal: HostCalibration,
    name: str,
    device_class: str | None = None,
    cpuinfo: Path = Path("/proc/cpuinfo"),
    meminfo: Path = Path("/proc/meminfo"),
) -> dict:
    """This machine as a device profile (the schema of ``devices/*.yaml``), validated.

    Peak compute is the calibration's measured (64 × 1024) GEMM rate per class; peak
    bandwidth its fastest fp32 weight streaming (cache regime) and effective bandwidth the
    streaming of its largest working set, so the prior bandwidth efficiency is their ratio.
    """
    host = socket.gethostname()
    src = _Sources(host, cal.measured_at, f"edgescale calibrate on {host} {cal.measured_at} "
                   f"(onnxruntime {cal.onnxruntime}, {cal.threads} threads)")  # fmt: skip
    cpu = read_cpuinfo(cpuinfo.read_text())
    device_class = device_class or default_class()
    memory = _memory(src, cal, meminfo)
    bw = memory["effective_gbps"]["value"] / memory["peak_gbps"]["value"]
    profile = {
        "schema_version": 1,
        "id": check_name(name),
        "name": f"{name} ({cpu.model})",
        "class": device_class,
        "soc": cpu.model,
        "cpu": _cpu(src, cpu, cpuinfo, meminfo),
        "peak_gops": {
            "fp32": src.measured(cal.matmul_gops["fp32"], "(64 x 1024) fp32 GEMM probe"),
            "int8": src.measured(cal.matmul_gops["int8"], "(64 x 1024) dynamic-int8 GEMM probe"),
        },
        "memory": memory,
        "power_w": src.assumed(
            POWER_PLACEHOLDER_W[device_class],
            f"a placeholder for a {device_class}; replace it with a power-meter reading or the data sheet",
        ),
        "runtimes": [{"runtime": "onnxruntime", "execution_providers": ["CPUExecutionProvider"]}],
        "efficiency": {
            "bw": {
                "value": round(min(1.0, bw), 3),
                "kind": "derived",
                "formula": "largest-working-set streaming rate / fastest (cache) streaming rate, both measured",
                "source": src.calibration,
            },
            "compute": src.assumed(0.5, "share of the GEMM rate a prefill reaches; the analytic predictor's prior"),
        },
        "calibration": [],
        "validation": [],
        "notes": f"written by {src.calibration}; clock {'read' if cpu.clusters[0][2] else 'unknown (1 GHz written)'}",
    }
    parse(DeviceProfile, profile, Path(f"{name}.yaml"))  # a schema error here is edgescale's bug: fail loudly
    return profile


def write_profile(path: Path, profile: dict) -> Path:
    return write_bytes(path, yaml.safe_dump(profile, sort_keys=False, allow_unicode=True).encode())


# --------------------------------------------------------------------------- measured anchors


def model_weights(path: Path) -> tuple[float, float]:
    """(parameters, average stored bits per weight incl. scales) of an ONNX model, as anchors state them.

    Every initializer's elements count as parameters, except a ``MatMulNBits`` node's packed
    weights, scales and zero points, which count as its K × N weights; the bits are all
    initializer bytes × 8 over those parameters.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)  # dims and types are enough
    inits = {t.name: t for t in model.graph.initializer}
    packed, params = set(), 0.0
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: a.i for a in node.attribute}
            params += attrs["K"] * attrs["N"]
            packed |= set(node.input[1:]) & set(inits)
    params += sum(math.prod(t.dims) for name, t in inits.items() if name not in packed)
    if params <= 0:
        raise UserError("the model has no weights to count", file=path)
    return params, 8 * sum(tensor_bytes(t) for t in inits.values()) / params


def bench_anchors(model: Path, result: dict, label: str | None = None) -> list[Anchor]:
    """The decode and prefill of an ``edgescale bench`` result as calibration anchors."""
    params, bits = model_weights(model)
    lat = result["latency"]
    date = time.strftime("%Y-%m-%d", time.gmtime())
    common = {
        "model": label or Path(model).name,
        "params": params,
        "bits_per_weight": round(min(32.0, bits), 4),
        "runtime": f"onnxruntime {import_onnxruntime().__version__} CPU ({lat['threads']} threads)",
        "source": f"measured by edgescale bench on {socket.gethostname()} {date} "
        f"(decode context {lat['decode_context']}, {lat['repeats']} repeats, medians)",
    }
    return [
        Anchor(workload="decode", tokens_per_s=round(1000 / lat["decode_ms_p50"], 4), **common),
        Anchor(
            workload="prefill",
            tokens_per_s=round(lat["prompt_len"] * 1000 / lat["prefill_ms_p50"], 4),
            prompt_len=lat["prompt_len"],
            **common,
        ),
    ]


def open_profile(name: str | None, path: Path | None) -> Path:
    """The profile ``bench`` adds anchors to: ``path``, else ``runs/NAME.yaml``; its id must be ``name``."""
    if path is None:
        if name is None:
            raise UserError("give --device-name NAME or --profile PATH", field="--device-name")
        path = Path("runs") / f"{check_name(name)}.yaml"
    if not Path(path).is_file():
        raise UserError("no device profile here; write one with edgescale calibrate --device-name NAME", file=path)
    profile = load_device_file(Path(path))
    if name is not None and profile.id != name:
        raise UserError(f"this profile is {profile.id!r}, not {name!r}", file=path, field="--device-name")
    return Path(path)


def add_anchors(path: Path, anchors: list[Anchor]) -> dict:
    """Append ``anchors`` to the profile's calibration anchors (atomically; an anchor already there,
    field for field, is not added twice) and refit its efficiencies: what changed."""
    before = load_device_file(path)
    data = read_yaml(path)
    added, skipped = [], []
    for a in anchors:
        (skipped if a in before.calibration or a in added else added).append(a)
    data["calibration"] = list(data.get("calibration") or []) + [a.model_dump(exclude_none=True) for a in added]
    after = parse(DeviceProfile, data, path)
    if added:
        write_profile(path, data)
    old, new = calibrated(before).efficiency, calibrated(after).efficiency
    return {
        "profile": str(path),
        "added": [f"{a.workload} {a.tokens_per_s:g} tokens/s" for a in added],
        "already_there": [f"{a.workload} {a.tokens_per_s:g} tokens/s" for a in skipped],
        "calibration_anchors": len(after.calibration),
        "efficiency": {k: {"before": getattr(old, k).value, "after": getattr(new, k).value} for k in ("bw", "compute")},
    }


def profile_target(name: str | None, path: Path | None, calibration_out: Path, device_class: str | None):
    """(profile id, file) ``calibrate`` writes, refused before any measuring: the id is ``name``, else
    ``path``'s stem, else ``host``; the file ``path``, else ``ID.yaml`` beside the calibration."""
    name = check_name(name or (path.stem if path is not None else "host"))
    if path is not None and path.stem != name:
        raise UserError(f"a profile's file stem is its id: name it {name}.yaml", file=path, field="--profile-out")
    if device_class is not None and device_class not in POWER_PLACEHOLDER_W:
        raise UserError(f"allowed: {', '.join(POWER_PLACEHOLDER_W)}", field="--device-class")
    return name, path if path is not None else calibration_out.parent / f"{name}.yaml"
