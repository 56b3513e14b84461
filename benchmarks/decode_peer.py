"""Decode peer: edgescale's decode path next to onnxruntime-genai on the same ONNX file.

    .venv/bin/python benchmarks/decode_peer.py [--genai-python /tmp/genai-venv/bin/python]
        [--models 4x384,4x384-int4,4x96] [--rounds 15] [--prompt-len 64] [--new-tokens 64]
        [--threads 2] [--realtime 20] [--json out.json]

onnxruntime-genai is not an edgescale dependency; install it in an environment of its own
and point ``--genai-python`` (or ``EDGESCALE_GENAI_PYTHON``) at that interpreter:

    python3 -m venv /tmp/genai-venv && /tmp/genai-venv/bin/pip install onnxruntime-genai==0.18.0

genai 0.18.0 bundles no onnxruntime: it requires the ``onnxruntime>=1.31`` package and
dlopens that package's ``libonnxruntime.so`` (``ORT_LIB_PATH``), here byte-identical to the
1.32.0 build edgescale pins. The two could share one environment, but onnxruntime's Python
module links its own static copy of the runtime, so one process holding both would run two
runtimes with two spinning thread pools on two cores. Each path therefore runs in its own
persistent worker process (genai under its interpreter), and a worker waiting for its turn
sits blocked on a pipe, not spinning. All three use ``--threads`` intra-op threads,
spinning on (onnxruntime's default), full graph optimization, the CPU provider:

- ``genai``: ``og.Generator``, ``append_tokens(prompt)`` then ``generate_next_token()`` per
  token, greedy; token ids in and out, no tokenizer (``benchmarks/genai_config.py``).
- ``es-generate``: the loop of ``OrtCausalLM.generate`` (``edgescale/bench/ort_model.py``):
  numpy feeds, the presents come back as numpy arrays and go in as the next past.
- ``es-measure``: ``_ort_worker.Variant`` (``edgescale/bench/_ort_worker.py``), which
  produces the decode latency edgescale reports: one ``run_with_iobinding`` at a fixed
  context (prompt + new/2, a real past) into preallocated outputs; prefill is one run
  (over its own seeded prompt of the same length).

A round generates ``--new-tokens`` tokens after the same ``--prompt-len`` prompt on each
path, paths in a shuffled order, so machine drift hits all three alike. TTFT is prompt in
to first token id out (genai's ``Generator`` is built before the clock starts); a decode
step is one later token. One round gives one sample per path (its median step), and each
ratio, edgescale / genai, is a ratio of medians over rounds with a paired bootstrap 95%
interval (:func:`edgescale.bench.measure.bootstrap_ratio_ci`). Before timing,
``OrtCausalLM.generate`` and genai must agree on 32 greedy tokens from the prompt; the
largest logit difference over those steps is shown.

Weights are random (latency does not depend on them) but rescaled: the default init's tied
embeddings make a random model repeat one byte forever, which would make the token check
vacuous; linear weights of std 1/sqrt(fan_in) and a position table of std 1 make the greedy
tokens change every step.

On a shared machine other load preempts the timed threads (p90s of 5-30x the p50 on the
2-core VM this was written on). ``--realtime 20`` (root) starts the three workers under
``chrt -f 20`` so that nothing at normal priority preempts them (the parent, which builds
the models, keeps its priority); the header says which workers ran real-time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PATHS = ("genai", "es-generate", "es-measure")
CHECK_STEPS = 32
INSTALL = "python3 -m venv /tmp/genai-venv && /tmp/genai-venv/bin/pip install onnxruntime-genai==0.18.0"


# ---------------------------------------------------------------- worker side (one process per path)


def _ms(t0: int) -> float:
    return (time.perf_counter_ns() - t0) / 1e6


class GenaiPath:
    def __init__(self, folder: str, prompt: np.ndarray, new: int) -> None:
        import onnxruntime_genai as og

        self.og, self.model, self.prompt, self.new = og, og.Model(folder), prompt.astype(np.int32), new

    def _generator(self, max_length: int):
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=max_length, do_sample=False)
        return self.og.Generator(self.model, params)

    def round(self) -> dict:
        g = self._generator(len(self.prompt) + self.new)
        t0 = time.perf_counter_ns()
        g.append_tokens(self.prompt)  # prefill
        g.generate_next_token()  # picks the first token from the prefill's logits
        int(g.get_next_tokens()[0])
        ttft, steps = _ms(t0), []
        for _ in range(self.new - 1):
            t0 = time.perf_counter_ns()
            g.generate_next_token()  # one decode run, then the pick
            int(g.get_next_tokens()[0])
            steps.append(_ms(t0))
        return {"ttft_ms": ttft, "steps_ms": steps}

    def check(self, steps: int) -> dict:
        g, tokens, logits = self._generator(len(self.prompt) + steps), [], []
        g.append_tokens(self.prompt)
        for _ in range(steps):
            g.generate_next_token()
            tokens.append(int(g.get_next_tokens()[0]))
            logits.append(g.get_output("logits")[0, -1].astype(np.float32).tolist())
        return {"tokens": tokens, "logits": logits}


class EsGeneratePath:
    def __init__(self, folder: str, prompt: np.ndarray, new: int, threads: int) -> None:
        from edgescale.bench.ort_model import OrtCausalLM

        self.lm, self.prompt, self.new = OrtCausalLM(Path(folder) / "model.onnx", threads), prompt[None], new

    def round(self) -> dict:
        t0 = time.perf_counter_ns()  # the loop of OrtCausalLM.generate, one clock per token
        logits, past = self.lm.run(self.prompt)
        tok = int(logits[0, -1].argmax())
        ttft, steps = _ms(t0), []
        for _ in range(self.new - 1):
            t0 = time.perf_counter_ns()
            logits, past = self.lm.run(np.array([[tok]], dtype=np.int64), past)
            tok = int(logits[0, -1].argmax())
            steps.append(_ms(t0))
        return {"ttft_ms": ttft, "steps_ms": steps}

    def check(self, steps: int) -> dict:
        tokens = self.lm.generate(self.prompt, steps)
        logits, past = self.lm.run(self.prompt)
        rows = [logits[0, -1]]
        for tok in tokens[:-1]:
            logits, past = self.lm.run(np.array([[tok]], dtype=np.int64), past)
            rows.append(logits[0, -1])
        return {"tokens": tokens, "logits": [r.astype(np.float32).tolist() for r in rows]}


class EsMeasurePath:
    def __init__(self, folder: str, prompt: np.ndarray, new: int, seed: int) -> None:
        from edgescale.bench import _ort_worker

        req = {
            "graph_optimization": "all",
            "seed": seed,
            "prompt_len": len(prompt),
            "decode_context": len(prompt) + new // 2,
        }
        self.v, self.new = _ort_worker.Variant(Path(folder).name, str(Path(folder) / "model.onnx"), req), new

    def round(self) -> dict:
        return {"ttft_ms": self.v.prefill_ms(), "steps_ms": [self.v.decode_ms() for _ in range(self.new - 1)]}


def _load(kind: str, msg: dict) -> tuple[dict, dict]:
    prompt, new, threads = np.asarray(msg["prompt"], dtype=np.int64), msg["new_tokens"], msg["threads"]
    info: dict = {"python": sys.executable}
    if kind == "genai":
        import onnxruntime_genai as og

        paths = {n: GenaiPath(f, prompt, new) for n, f in msg["models"].items()}
        info |= {"onnxruntime_genai": og.__version__, "onnxruntime_lib": os.environ.get("ORT_LIB_PATH", "?")}
    else:
        import onnxruntime as ort

        if kind == "es-measure":  # as _ort_worker.measure does: one global pool for every session
            ort.set_default_logger_severity(3)
            ort.set_global_thread_pool_sizes(threads, 1)
            paths = {n: EsMeasurePath(f, prompt, new, msg["seed"]) for n, f in msg["models"].items()}
        else:
            paths = {n: EsGeneratePath(f, prompt, new, threads) for n, f in msg["models"].items()}
        info["onnxruntime"] = ort.__version__
    return paths, info


def serve(kind: str) -> int:
    """Answer one JSON line per request line on stdin until EOF."""
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever native code prints goes to stderr, not into the replies
    paths: dict = {}
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["op"] == "load":
                paths, info = _load(kind, msg)
                rt = os.sched_getscheduler(0) in (os.SCHED_FIFO, os.SCHED_RR)
                reply = {**info, "os_threads": len(os.listdir("/proc/self/task")), "realtime": rt}
            elif msg["op"] == "round":
                reply = paths[msg["model"]].round()
            else:
                reply = paths[msg["model"]].check(msg["steps"])
        except Exception as e:  # sent to the parent, which stops with it
            reply = {"error": f"{type(e).__name__}: {e}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
    return 0


# ---------------------------------------------------------------- parent side


class Worker:
    def __init__(self, kind: str, python: str, threads: int, realtime: int) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(HERE.parent)}
        self.kind = kind
        chrt = ["chrt", "-f", str(realtime)] if realtime else []
        self.proc = subprocess.Popen(
            [*chrt, python, str(Path(__file__).resolve()), "--worker", kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=HERE.parent,
        )

    def call(self, **msg) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"decode_peer: the {self.kind} worker died (exit {self.proc.wait()}); see stderr above")
        reply = json.loads(line)
        if "error" in reply:
            raise SystemExit(f"decode_peer: {self.kind} failed on {msg['op']} {msg.get('model', '')}: {reply['error']}")
        return reply

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def genai_python(option: str | None) -> str | None:
    """The interpreter that imports onnxruntime_genai, or None after printing how to install it."""
    python = option or os.environ.get("EDGESCALE_GENAI_PYTHON") or sys.executable
    probe = subprocess.run([python, "-c", "import onnxruntime_genai"], capture_output=True, text=True)
    if probe.returncode:
        why = (probe.stderr.strip().splitlines() or ["not found"])[-1]
        print(
            f"decode_peer: {python} cannot import onnxruntime_genai ({why}).\n"
            f"Install it in its own environment (not edgescale's .venv):\n    {INSTALL}\n"
            "then pass --genai-python /tmp/genai-venv/bin/python (or set EDGESCALE_GENAI_PYTHON).",
            file=sys.stderr,
        )
        return None
    return python


def random_gpt(path: Path, n_layer: int, n_embd: int, block_size: int) -> Path:
    """Export a GPT with random, rescaled weights (see the module docstring) to ``path``."""
    import torch

    from edgescale.export.onnx import export_onnx
    from edgescale.models.gpt import GPT, GPTConfig

    n_head = n_embd // (16 if n_embd < 256 else 64)  # the planner's head size (edgescale.scaling.plan)
    model = GPT(GPTConfig(n_layer, n_head, n_embd, block_size=block_size), seed=0).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and m is not model.lm_head:  # lm_head is tied to wte
                m.weight.normal_(0, m.in_features**-0.5, generator=g)
        model.wpe.weight.normal_(0, 1.0, generator=g)
    return export_onnx(model, path)


def build(tmp: Path, specs: list[str], block_size: int, threads: int) -> dict[str, str]:
    """``LxD`` or ``LxD-int4`` -> a folder with model.onnx and genai_config.json (what genai loads)."""
    from genai_config import write_genai_config

    from edgescale.compress.int4 import Int4WeightOnlyConfig, int4_weight_only
    from edgescale.compress.registry import StepContext

    folders = {}
    for spec in specs:
        shape, _, quant = spec.partition("-")
        fp32 = tmp / shape / "model.onnx"
        if not fp32.exists():
            n_layer, n_embd = (int(x) for x in shape.split("x"))
            random_gpt(fp32, n_layer, n_embd, block_size)
            write_genai_config(fp32, block_size, threads)
        onnx_path = fp32
        if quant == "int4":  # the package's step with its defaults: rtn, block 32, symmetric, accuracy level 4
            work = tmp / spec
            work.mkdir()
            onnx_path = int4_weight_only(fp32, Int4WeightOnlyConfig(), StepContext(work, log=lambda m: None))
            onnx_path = onnx_path.replace(work / "model.onnx")
            write_genai_config(onnx_path, block_size, threads)
        folders[spec] = str(onnx_path.parent)
    return folders


def _row(name: str, samples: dict, base: dict | None, check: str, dlogit: str) -> list[str]:
    from edgescale.bench.measure import bootstrap_ratio_ci

    cells = [name, check, dlogit]
    for key in ("ttft", "step"):
        pooled = np.asarray(samples["ttft" if key == "ttft" else "steps"])
        p10, p50, p90 = np.percentile(pooled, [10, 50, 90])
        cells.append(f"{p50:.3f} ({p10:.3f}-{p90:.3f})")
        if base is None:
            cells.append("1 (genai)")
        else:
            r, lo, hi = bootstrap_ratio_ci(samples[key], base[key])
            cells.append(f"{r:.2f} [{lo:.2f}, {hi:.2f}]")
    cells.append(f"{1000 / np.median(samples['steps']):.0f}")
    return cells


def timed_rounds(workers: dict[str, Worker], models: list[str], rounds: int, rng: np.random.Generator) -> dict:
    """Per model and path: TTFT and median step per round (paired by round), and every step."""
    samples = {m: {k: {"ttft": [], "step": [], "steps": []} for k in PATHS} for m in models}
    for _ in range(rounds):
        for m in models:
            for i in rng.permutation(len(PATHS)):
                r, s = workers[PATHS[i]].call(op="round", model=m), samples[m][PATHS[i]]
                s["ttft"].append(r["ttft_ms"])
                s["step"].append(float(np.median(r["steps_ms"])))
                s["steps"].extend(r["steps_ms"])
    return samples


def run(args: argparse.Namespace, python: str) -> dict:
    import tempfile

    rng = np.random.default_rng(args.seed)
    prompt = rng.integers(0, 256, size=args.prompt_len).tolist()
    with tempfile.TemporaryDirectory(prefix="edgescale-decode-peer-") as d:
        models = build(Path(d), args.models.split(","), args.block_size, args.threads)
        workers = {k: Worker(k, python if k == "genai" else sys.executable, args.threads, args.realtime) for k in PATHS}
        try:
            load = {"models": models, "prompt": prompt, "new_tokens": args.new_tokens, "threads": args.threads}
            info = {k: w.call(op="load", seed=args.seed, **load) for k, w in workers.items()}
            checks = {
                m: {k: workers[k].call(op="check", model=m, steps=CHECK_STEPS) for k in PATHS[:2]} for m in models
            }
            for m in models:  # warm-up: two untimed rounds per path
                for w in workers.values():
                    w.call(op="round", model=m)
                    w.call(op="round", model=m)
            load_start = os.getloadavg()
            samples = timed_rounds(workers, list(models), args.rounds, rng)
        finally:
            for w in workers.values():
                w.close()
    return {"info": info, "checks": checks, "samples": samples, "load": [load_start, os.getloadavg()]}


def report(args: argparse.Namespace, result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=170)
    info = result["info"]
    console.print(
        f"onnxruntime-genai {info['genai']['onnxruntime_genai']} (runtime {info['genai']['onnxruntime_lib']}); "
        f"edgescale paths on onnxruntime {info['es-generate']['onnxruntime']}; {args.threads} intra-op threads; "
        f"OS threads per worker { {k: v['os_threads'] for k, v in info.items()} }; "
        f"real-time priority { {k: v['realtime'] for k, v in info.items()} }\n"
        f"prompt {args.prompt_len} tokens, then {args.new_tokens} new (decode context {args.prompt_len + 1}-"
        f"{args.prompt_len + args.new_tokens - 1}; es-measure at a fixed {args.prompt_len + args.new_tokens // 2}); "
        f"{args.rounds} rounds, paths shuffled per round; "
        f"load avg (1/5/15 min) {' -> '.join(str([round(x, 2) for x in la]) for la in result['load'])}"
    )
    table = Table(
        title="decode peer: ms p50 (p10-p90 over all samples); ratios edgescale/genai of per-round medians, 95% CI"
    )
    for col in ("model / path", f"same {CHECK_STEPS} tokens", "max |dlogit|", "TTFT ms", "TTFT ratio",
                "decode ms/token", "decode ratio", "tok/s"):  # fmt: skip
        table.add_column(col, justify="left" if col.startswith("model") else "right")
    for m, paths in result["samples"].items():
        c = result["checks"][m]
        same = c["genai"]["tokens"] == c["es-generate"]["tokens"]
        diff = float(np.abs(np.asarray(c["genai"]["logits"]) - np.asarray(c["es-generate"]["logits"])).max())
        for k in PATHS:
            check, dl = ("yes" if same else "NO", f"{diff:.1e}") if k == "es-generate" else ("", "")
            table.add_row(*_row(f"{m} / {k}", paths[k], None if k == "genai" else paths["genai"], check, dl))
        table.add_section()
    console.print(table)
    for m, c in result["checks"].items():
        if c["genai"]["tokens"] != c["es-generate"]["tokens"]:
            console.print(f"{m}: genai {c['genai']['tokens']}\n{' ' * len(m)}  edgescale {c['es-generate']['tokens']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    ap.add_argument("--genai-python", help="interpreter with onnxruntime-genai (default: $EDGESCALE_GENAI_PYTHON)")
    ap.add_argument("--models", default="4x384,4x384-int4,4x96", help="comma-separated LxD or LxD-int4")
    ap.add_argument("--rounds", type=int, default=15, help="timed rounds (one generation per path each)")
    ap.add_argument("--prompt-len", type=int, default=64, help="prompt tokens (TTFT)")
    ap.add_argument("--new-tokens", type=int, default=64, help="tokens generated per round")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads, every path")
    ap.add_argument("--block-size", type=int, default=256, help="the models' context length")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--realtime", type=int, default=0, help="SCHED_FIFO priority for the workers (root); 0 = off")
    ap.add_argument("--json", type=Path, help="also write raw samples here")
    args = ap.parse_args()
    if args.worker:
        return serve(args.worker)
    if args.prompt_len + args.new_tokens > args.block_size or args.new_tokens < 2 or args.rounds < 2:
        ap.error("need prompt-len + new-tokens <= block-size, new-tokens >= 2 and rounds >= 2")
    if bad := [s for s in args.models.split(",") if not re.fullmatch(r"\d+x\d+(-int4)?", s)]:
        ap.error(f"--models: {bad} are not LxD or LxD-int4 (e.g. 4x384, 4x384-int4)")
    sys.path.insert(0, str(HERE))  # genai_config.py
    python = genai_python(args.genai_python)
    if python is None:
        return 2
    result = run(args, python)
    report(args, result)
    if args.json:
        from edgescale.atomic import write_json

        write_json(args.json, {"args": {k: str(v) for k, v in vars(args).items()}, **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
