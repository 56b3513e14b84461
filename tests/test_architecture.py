"""The import contract of docs/architecture.md, read from the source with ``ast`` (nothing imported).

Every internal import counts, the ones inside functions included: an import deferred into a
function is still a dependency, and a cycle closed through one is still a cycle. Four rules:

1. no cycles between modules;
2. a module imports only modules of its own layer or of lower ones (``LAYERS``);
3. an import inside a function names a heavy or optional package (``LATE_OK``), or is one of
   the few internal late imports allowed by ``LATE_INTERNAL_OK`` (counted, capped);
4. importing a module changes no process-wide state (one subprocess imports them all).

A failure lists every violation with its file and line.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "edgescale"

# Lowest first. A module belongs to the layer of the longest prefix that names it
# (``edgescale`` itself only by exact name). A few modules sit below the package they
# live in; each says why (docs/architecture.md, "Layers").
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # content-hashed artifacts, temp-then-rename, errors, progress; export.canonical is the
    # artifact hash rundir keys on (ONNX-aware, so it lives in export/, but imports nothing of it)
    (
        "base",
        (
            "edgescale",
            "edgescale.errors",
            "edgescale.atomic",
            "edgescale.rundir",
            "edgescale.progress",
            "edgescale.resources",
            "edgescale.export.canonical",
            "edgescale.ortenv",
        ),
    ),
    (
        "config",
        (
            "edgescale.config",
            "edgescale.config_models",
            "edgescale.recipe_schema",
            "edgescale.yamlfile",
            "edgescale.profiles",
            "edgescale.data",
        ),
    ),
    # backends, and what runs and scores a model of any kind: the onnxruntime session and the
    # bits-per-byte scorer (training curves, export checks and recovery steps all score);
    # guard's causality checks run a model through them
    (
        "models",
        (
            "edgescale.models",
            "edgescale.examples",
            "edgescale.bench.ort_model",
            "edgescale.bench.loss",
            "edgescale.bench.leak",
            "edgescale.guard",
            "edgescale.onnx_probe",
            "edgescale.hf.source",
            "edgescale.hf.checks",
            "edgescale.hf.spm",
            "edgescale.hf.tokens",
            "edgescale.hf.convert",
        ),
    ),
    # steps registered with their facts, and the concrete backends that give a step its
    # implementation per model kind (the protocol they implement, models.backend, is lower);
    # inputs: a study is valid only if its recipes compile, so its loader sits on the steps
    (
        "steps",
        (
            "edgescale.compress",
            "edgescale.export",
            "edgescale.train",
            "edgescale.hf",
            "edgescale.backends",
            "edgescale.inputs",
        ),
    ),
    ("measure", ("edgescale.bench", "edgescale.scaling")),
    # the store prefix covers its submodules: store.schema, then store.write and store.read on it
    ("results", ("edgescale.results", "edgescale.store")),
    ("report", ("edgescale.report",)),
    (
        "pipeline",
        (
            "edgescale.study_inputs",
            "edgescale.pipeline",
            "edgescale.failures",
            "edgescale.executor",
            "edgescale.run",
            "edgescale.chain",
            "edgescale.degradation_grid",
            "edgescale.hf.onnx_file",
        ),
    ),
    ("cli", ("edgescale.cli",)),
]

# Packages a function may import late: optional extras (edgescale[hf], edgescale[ray]) and
# packages whose import costs a quarter of a second or more on 2 cores (measured on the
# reference machine: torch 1.7 s, onnxscript 1.9 s, onnx 1.0 s, matplotlib.pyplot 1.0 s,
# scipy.optimize 0.65 s, onnxruntime 0.3 s; transformers 3.4 s, ray 0.6 s). safetensors is
# here for safetensors.torch, which imports torch. numpy, pydantic, yaml, rich and the
# standard library cost less than that and belong at the top of the module.
LATE_OK = frozenset(
    {
        "torch",
        "onnx",
        "onnxruntime",
        "onnxscript",
        "scipy",
        "matplotlib",
        "safetensors",
        "transformers",
        "optimum",
        "tokenizers",
        "huggingface_hub",
        "ray",
        "selenium",
    }
)

# Internal imports that may stay inside a function, by importing module (prefix) and why.
# Everything else internal is imported at the top of the module.
LATE_INTERNAL_OK: dict[str, str] = {
    # A command imports the library function it calls, so `edgescale --help`, `validate`,
    # `pick` and `compare` start without torch or onnx (the CLI tests run in subprocesses).
    "edgescale.cli": "a command imports what it calls",
}
MAX_LATE_INTERNAL = 60  # the CLI's commands; printed by the test, lower it as commands go lazy-free


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # an edgescale module, or the external module as written
    file: str
    line: int
    late: bool  # inside a function

    @property
    def internal(self) -> bool:
        return self.target == "edgescale" or self.target.startswith("edgescale.")

    def where(self) -> str:
        return f"{self.file}:{self.line}{' (inside a function)' if self.late else ''}"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str:
    """The module an import of ``name`` loads: ``name`` itself or the longest existing prefix."""
    parts = name.split(".")
    while parts and ".".join(parts) not in MODULES:
        parts.pop()
    return ".".join(parts) or name


def _imports_of(module: str, path: Path) -> list[Import]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    rel = str(path.relative_to(REPO))
    found: list[Import] = []

    def add(name: str, node: ast.stmt, late: bool) -> None:
        internal = name == "edgescale" or name.startswith("edgescale.")
        target = _resolve(name) if internal else name
        found.append(Import(module, target, rel, node.lineno, late))

    def visit(node: ast.AST, late: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, child, late)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: climb from the importing package
                    up = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(up + ([child.module] if child.module else []))
                for alias in child.names:  # `from pkg import submodule` imports the submodule
                    full = f"{base}.{alias.name}"
                    add(full if full in MODULES else base, child, late)
            visit(child, late or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text(), filename=rel), False)
    return found


IMPORTS = [imp for module, path in MODULES.items() for imp in _imports_of(module, path)]
INTERNAL = [i for i in IMPORTS if i.internal and i.target != i.importer]


def _short(module: str) -> str:
    return module.removeprefix("edgescale.")


def layer_of(module: str) -> int | None:
    best, rank = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            hit = module == p if p == "edgescale" else (module == p or module.startswith(p + "."))
            if hit and len(p) > best:
                best, rank = len(p), i
    return rank


# --------------------------------------------------------------------------- cycles


def _components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def _shortest_path(graph: dict[str, set[str]], start: str, goal: str, within: set[str]) -> list[str]:
    prev = {start: start}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        if v == goal:
            path = [v]
            while path[-1] != start:
                path.append(prev[path[-1]])
            return path[::-1]
        for w in sorted(graph[v] & within):
            if w not in prev:
                prev[w] = v
                queue.append(w)
    raise AssertionError(f"no path {start} -> {goal} inside its component")


def find_cycles(imports: list[Import]) -> list[str]:
    """Each tangle (strongly connected component), then for every import inside it the
    shortest cycle through that import, as ``a → b → a`` with where each edge is written."""
    graph: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], list[Import]] = defaultdict(list)
    for imp in imports:
        graph[imp.importer].add(imp.target)
        graph[imp.target]  # noqa: B018  (every module is a node)
        where[(imp.importer, imp.target)].append(imp)
    report: list[str] = []
    for comp in _components(graph):
        inside = set(comp)
        report.append(f"{len(comp)} modules import each other: {', '.join(_short(m) for m in comp)}")
        seen: set[tuple[str, ...]] = set()
        for a in comp:
            for b in sorted(graph[a] & inside):
                cycle = [a, *_shortest_path(graph, b, a, inside)]
                turn = cycle[:-1].index(min(cycle[:-1]))
                key = tuple(cycle[turn:-1] + cycle[:turn])
                if key in seen:
                    continue
                seen.add(key)
                chain = " → ".join(_short(m) for m in (*key, key[0]))
                edges = zip(key, (*key[1:], key[0]), strict=True)
                lines = [
                    f"{_short(x)} → {_short(y)}: {', '.join(dict.fromkeys(i.where() for i in where[(x, y)]))}"
                    for x, y in edges
                ]
                report.append(f"  {chain}\n      " + "\n      ".join(lines))
    return report


# --------------------------------------------------------------------------- the rules


def test_every_module_has_a_layer():
    missing = sorted(m for m in MODULES if layer_of(m) is None)
    assert not missing, "modules with no layer (add them to LAYERS and docs/architecture.md): " + ", ".join(missing)


def test_no_import_cycles():
    cycles = find_cycles(INTERNAL)
    assert not cycles, "import cycles (function-level imports count):\n" + "\n".join(cycles)


def test_layers():
    names = [name for name, _ in LAYERS]
    bad = []
    for imp in INTERNAL:
        src, dst = layer_of(imp.importer), layer_of(imp.target)
        if src is not None and dst is not None and dst > src:
            bad.append(
                f"{_short(imp.importer)} ({names[src]}) imports {_short(imp.target)} ({names[dst]}): {imp.where()}"
            )
    bad = sorted(set(bad))
    assert not bad, f"{len(bad)} imports of a higher layer (order: {' < '.join(names)}):\n" + "\n".join(bad)


def _late_internal_allowed(imp: Import) -> bool:
    return any(imp.importer == p or imp.importer.startswith(p + ".") for p in LATE_INTERNAL_OK)


def test_late_imports():
    late = [i for i in IMPORTS if i.late]
    internal = [i for i in late if i.internal]
    allowed = [i for i in internal if _late_internal_allowed(i)]
    print(f"imports inside functions: {len(late)} ({len(internal)} internal, {len(allowed)} of them allowed)")
    bad = [
        f"{_short(i.importer)} imports {i.target} late: {i.where()}"
        for i in late
        if not i.internal and i.target.split(".")[0] not in LATE_OK
    ]
    bad += [f"{_short(i.importer)} imports {_short(i.target)} late: {i.where()}" for i in internal if i not in allowed]
    bad = sorted(set(bad))
    if len(allowed) > MAX_LATE_INTERNAL:
        bad.append(f"{len(allowed)} allowed internal late imports, more than the cap of {MAX_LATE_INTERNAL}")
    assert not bad, (
        f"{len(bad)} imports inside functions that belong at the top of their module "
        f"(late only for {', '.join(sorted(LATE_OK))}):\n" + "\n".join(bad)
    )


# --------------------------------------------------------------------------- import side effects

_PROBE = r"""
import importlib, json, logging, os, signal, socket, sys, warnings

for name in json.loads(sys.argv[1]):  # what edgescale imports at module level, before the baseline
    try:
        importlib.import_module(name)
    except ImportError:
        pass
import numpy as np
import torch


def state():
    loggers = logging.Logger.manager.loggerDict
    return {
        "os.environ": dict(os.environ),
        "torch threads": torch.get_num_threads(),
        "torch interop threads": torch.get_num_interop_threads(),
        "torch default dtype": str(torch.get_default_dtype()),
        "torch grad enabled": torch.is_grad_enabled(),
        "torch deterministic": torch.are_deterministic_algorithms_enabled(),
        "numpy error handling": np.geterr(),
        "warnings filters": [repr(f) for f in warnings.filters],
        "root logger level": logging.getLogger().level,
        "root logger handlers": [repr(h) for h in logging.getLogger().handlers],
        "logger levels": {k: v.level for k, v in loggers.items() if isinstance(v, logging.Logger) and v.level},
        "logging disabled": logging.root.manager.disable,
        "signal handlers": {s: repr(signal.getsignal(getattr(signal, s))) for s in ("SIGINT", "SIGTERM")},
        "socket default timeout": socket.getdefaulttimeout(),
        "sys.path": list(sys.path),
        "recursion limit": sys.getrecursionlimit(),
    }


changes = []
before = state()
for module in json.loads(sys.argv[2]):
    importlib.import_module(module)
    after = state()
    for key in before:
        if after[key] != before[key]:
            a, b = before[key], after[key]
            if isinstance(a, dict):
                diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                what = f"{key}: {', '.join(f'{k}={b.get(k)!r}' for k in diff)}"
            else:
                what = f"{key}: {a!r} -> {b!r}"
            changes.append(f"importing {module} changed {what}")
    before = after
print(json.dumps(changes))
"""


def test_importing_changes_no_process_state(tmp_path):
    """Import every module in one fresh interpreter; after each, the process-wide state must be
    what it was. Packages edgescale imports at module level are imported first, so what is
    reported is edgescale's own doing. A canary module that sets the log level is imported
    last: the probe must see it, or it sees nothing."""
    (tmp_path / "state_canary.py").write_text("import logging\nlogging.getLogger().setLevel(logging.ERROR)\n")
    externals = sorted(
        {
            i.target
            for i in IMPORTS
            if not i.internal and not i.late and i.target.split(".")[0] not in sys.stdlib_module_names
        }
    )
    modules = sorted(m for m in MODULES if not m.endswith("__main__"))  # __main__ runs the CLI
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "PYTHONHASHSEED": "0", "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(externals), json.dumps([*modules, "state_canary"])],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    changes = json.loads(proc.stdout.strip().splitlines()[-1])
    assert changes[-1:] == ["importing state_canary changed root logger level: 30 -> 40"], changes[-1:]
    changes = changes[:-1]
    assert not changes, "importing a module changed process-wide state:\n" + "\n".join(changes)
