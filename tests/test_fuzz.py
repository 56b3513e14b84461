"""Generated and mutated inputs thrown at every user-facing loader (hypothesis).

Property: a loader either returns a valid result or raises one :class:`UserError`
naming the file — never another exception, never a hang. Covered: study, recipe and
device-profile YAML (``edgescale validate``; a study's is also the first thing ``run``
does), the ``edgescale fit FILE.csv`` loader and fit, and ONNX bytes, which are opened
first in a child process with a timeout (:func:`edgescale.onnx_probe.probe_onnx`) and only
then in this one. Examples are bounded and derandomized, so CI sees the same inputs on
every run; ``pytest --hypothesis-show-statistics`` prints how many ran.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import onnx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from edgescale.errors import UserError
from edgescale.inputs import validate_file

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "studies").glob("*.yaml")) + sorted((REPO / "recipes").glob("*.yaml"))
SHIPPED += sorted((REPO / "devices").glob("*.yaml"))


def fuzz(n: int):
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,  # the same inputs in CI every time; failures reproduce
        database=None,  # and no .hypothesis/ folder in the repo
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


# ----------------------------------------------------------------------------- values
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["fp32", "int8_dynamic", "host", "rpi5-8gb", "../../etc/passwd", "/tmp/x", "0", "-1", ""])
)
VALUES = st.recursive(
    SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=8
)
YAML_NOISE = st.text(alphabet=st.sampled_from(list(":-[]{}&*!|>#'\"\n\t ,?%@`<=~0123456789.eE+abz\\\x00\u00e9")))


@st.composite
def mutated_doc(draw, doc):
    """Walk into the parsed document and delete, replace or add one thing; repeat 1-3 times."""
    doc = yaml.safe_load(yaml.safe_dump(doc))  # a deep copy
    for _ in range(draw(st.integers(1, 3))):
        node = doc
        while isinstance(node, (dict, list)) and node and draw(st.booleans()):
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            child = node[draw(st.sampled_from(keys))]
            if not isinstance(child, (dict, list)) or not child:
                break
            node = child
        if isinstance(node, dict):
            action = draw(st.sampled_from(["delete", "replace", "add"]))
            if node and action != "add":
                key = draw(st.sampled_from(list(node)))
                if action == "delete":
                    del node[key]
                else:
                    node[key] = draw(VALUES)
            else:
                node[draw(st.text(max_size=8))] = draw(VALUES)
        elif isinstance(node, list):
            if node and draw(st.booleans()):
                node[draw(st.integers(0, len(node) - 1))] = draw(VALUES)
            else:
                node.append(draw(VALUES))
    return doc


@st.composite
def mutated_text(draw, text):
    """Byte-level damage: delete, insert YAML-ish noise, duplicate or truncate."""
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 40)))
        op = draw(st.sampled_from(["delete", "insert", "duplicate", "truncate"]))
        if op == "delete":
            text = text[:i] + text[j:]
        elif op == "insert":
            text = text[:i] + draw(YAML_NOISE) + text[i:]
        elif op == "duplicate":
            text = text[:j] + text[i:j] + text[i:]
        else:
            text = text[:i]
    return text


def _check_yaml(path: Path) -> None:
    try:
        kind = validate_file(path)
    except UserError as e:
        assert str(path) in str(e)
        return
    assert kind.partition(";")[0] in ("study", "recipe", "device")  # a study may add "; runs code: ..."


# ----------------------------------------------------------------------------- YAML
@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@fuzz(60)
@given(data=st.data())
def test_mutated_config_documents_give_a_result_or_one_user_error(scratch, data):
    src = data.draw(st.sampled_from(SHIPPED))
    doc = data.draw(mutated_doc(yaml.safe_load(src.read_text())))
    path = scratch / src.name  # a device profile's id must match its file name
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    _check_yaml(path)


@fuzz(60)
@given(data=st.data())
def test_damaged_config_text_gives_a_result_or_one_user_error(scratch, data):
    src = data.draw(st.sampled_from(SHIPPED))
    path = scratch / src.name
    path.write_text(data.draw(mutated_text(src.read_text())), encoding="utf-8", errors="surrogatepass")
    _check_yaml(path)


def _alias_chain(levels: int, fanout: int) -> str:
    """A flow list whose level k repeats level k-1 ``fanout`` times by alias: fanout**levels values."""
    parts = [f"&l0 [{', '.join(['lol'] * fanout)}]"]
    parts += [f"&l{k} [{', '.join([f'*l{k - 1}'] * fanout)}]" for k in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


HOSTILE = st.one_of(
    st.integers(40, 5000).map(lambda n: "[" * n + "]" * n),  # deep nesting (libyaml segfaulted at ~30k)
    st.integers(40, 2000).map(lambda n: "{a: " * n + "1" + "}" * n),
    st.tuples(st.integers(2, 9), st.integers(2, 12)).map(lambda t: _alias_chain(*t)),  # up to 12^9 values
    st.sampled_from([".inf", "-.inf", ".nan", "1e400", "-1e400", "1e308", "1e30", "-1e30", "1e-320", "-0.0"]),
    st.sampled_from(["123456789012345678901234567890", "true", "'1'", "0x7fffffffffffffff", "~"]),
)
KEY_LINE = re.compile(r"^(\s*)([A-Za-z_]\w*):(\s*)([^#\n]*)$", re.M)


@fuzz(80)
@given(data=st.data())
def test_hostile_values_and_duplicate_keys_give_a_result_or_one_user_error(scratch, data):
    """Deep nesting, alias chains, non-finite, huge and mistyped numbers put in place of a value of a
    shipped file, or a key line repeated (a duplicate key)."""
    src = data.draw(st.sampled_from(SHIPPED))
    text = src.read_text()
    lines = [m for m in KEY_LINE.finditer(text) if m.group(4).strip()]
    m = data.draw(st.sampled_from(lines))
    if data.draw(st.booleans()):
        text = text[: m.start(4)] + data.draw(HOSTILE) + text[m.end(4) :]
    else:
        text = text[: m.end()] + "\n" + m.group(0) + text[m.end() :]
    path = scratch / src.name
    path.write_text(text)
    _check_yaml(path)


# A number replaced by a hostile one: non-finite, huge, negative, mistyped (issue 17 cases 2, 3, 14).
HOSTILE_NUMBERS = st.one_of(
    st.sampled_from([".inf", "-.inf", ".nan", "[.inf]", "[.nan]", "[1e12]", "1e12", "1.0e+12", "1e30", "1.0e+30"]),
    st.sampled_from(["1000000000000", "4294967296", "true", "false", "'1'", "1.5", "0", "-1", "~", "1e-320"]),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda x: yaml.safe_dump(x).removesuffix("\n...\n")),
    st.integers(-(10**30), 10**30).map(str),
)
NUMBER_LINE = re.compile(
    r"^(\s*-?\s*)([A-Za-z_]\w*):([ \t]*)([-+]?[.\d][-+.\deE_]*|\[[-+.\deE, _]+\])[ \t]*(#.*)?$", re.M
)
WITH_NUMBERS = [f for f in SHIPPED if NUMBER_LINE.search(f.read_text())]
STUDIES = [f for f in WITH_NUMBERS if f.parent.name == "studies"]  # half the draws: run crashed on these


def _runnable(study) -> None:
    """What a study that validates must be for ``run``: every number finite, a ladder the planner can
    build, a micro-batch that fits in memory (each was a crash once: issue 17 case 2)."""
    from edgescale.config import MAX_BATCH_TOKENS
    from edgescale.models.shape import ladder_sizes

    def numbers(x):
        if isinstance(x, dict):
            return [n for v in x.values() for n in numbers(v)]
        if isinstance(x, list):
            return [n for v in x for n in numbers(v)]
        return [x] if isinstance(x, float) else []

    assert all(math.isfinite(x) for x in numbers(study.model_dump()))
    if study.ladder is not None:
        assert ladder_sizes(study.ladder)
    assert study.training.batch_size * study.block_size <= MAX_BATCH_TOKENS


@fuzz(300)
@given(data=st.data())
def test_hostile_numbers_in_numeric_fields_are_refused_or_runnable(scratch, data):
    """300 inputs (about 5 s): one number of a shipped study, recipe or device file replaced by a hostile one;
    validate refuses it with one UserError, or what it accepts is runnable (:func:`_runnable`)."""
    from edgescale.inputs import load_study

    src = data.draw(st.sampled_from(STUDIES if data.draw(st.booleans()) else WITH_NUMBERS))
    text = src.read_text()
    m = data.draw(st.sampled_from(list(NUMBER_LINE.finditer(text))))
    value = data.draw(HOSTILE_NUMBERS)
    if m.group(4).startswith("["):  # one element of the list (the others keep the study's sizes consistent)
        items = m.group(4).strip("[]").split(",")
        items[data.draw(st.integers(0, len(items) - 1))] = value
        value = "[" + ", ".join(items) + "]"
    path = scratch / src.name
    path.write_text(text[: m.start(4)] + value + text[m.end(4) :])
    try:
        kind = validate_file(path)
    except UserError as e:
        assert str(path) in str(e) and "\n" not in str(e)
        return
    if kind.startswith("study"):
        _runnable(load_study(path)[0])


@fuzz(40)
@given(raw=st.binary(max_size=300) | YAML_NOISE.map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_arbitrary_bytes_as_config_give_one_user_error(scratch, raw):
    path = scratch / "random.yaml"
    path.write_bytes(raw)
    with pytest.raises(UserError, match="random.yaml"):
        validate_file(path)


# ----------------------------------------------------------------------------- CSV
CELLS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.sampled_from(["", " ", "nan", "inf", "-0", "1e400", "1e-400", "0x10", "1,5", '"3"', "1e9", "2e11", "3.2"]),
    st.text(max_size=6),
)


@st.composite
def csv_text(draw):
    header = draw(
        st.permutations(["N", "D", "loss"] + draw(st.lists(st.sampled_from(["n", "LOSS", "x", ""]), max_size=2)))
    )
    header = (
        draw(st.lists(st.sampled_from(header), min_size=0, max_size=len(header), unique=True))
        if draw(st.integers(0, 9)) == 0
        else header
    )
    rows = draw(st.lists(st.lists(CELLS, min_size=0, max_size=len(header) + 1), max_size=9))
    if draw(st.booleans()):  # plenty of plausible rows, so some inputs reach the fit
        rows += [
            [
                repr(draw(st.floats(1e3, 1e9))) if h.lower() in ("n", "d") else repr(draw(st.floats(1.5, 6.0)))
                for h in header
            ]
            for _ in range(draw(st.integers(5, 8)))
        ]
    sep = draw(st.sampled_from([",", ";", "\t"]))
    return "\n".join(sep.join(r) for r in [header, *rows]) + draw(st.sampled_from(["", "\n", "\r\n", "\x00"]))


@fuzz(60)
@given(text=csv_text() | st.text(max_size=200))
def test_csv_points_load_and_fit_or_one_user_error(scratch, text):
    from edgescale.results.points import load_points
    from edgescale.scaling.fit import fit_chinchilla

    path = scratch / "points.csv"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        pts = load_points(path)
    except UserError as e:
        assert str(path) in str(e)
        return
    assert len(pts.n) >= 5 and all(math.isfinite(x) and x > 0 for x in (*pts.n, *pts.d, *pts.loss))
    fit = fit_chinchilla(pts.n, pts.d, pts.loss, n_boot=3, top_starts=2)
    assert fit.to_dict()


# ----------------------------------------------------------------------------- ONNX
def _relu() -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    return helper.make_model(graph).SerializeToString()


@pytest.fixture(scope="module")
def onnx_bases(tiny_onnx) -> list[bytes]:
    return [_relu(), Path(tiny_onnx).read_bytes()]


@st.composite
def damaged_onnx(draw, bases):
    data = bytearray(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "zero"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip":  # structure lives in the first bytes of small fields: bias towards them
            i = draw(st.integers(0, min(len(data) - 1, 400))) if draw(st.booleans()) else i
            data[i] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        else:
            data[i : i + 32] = bytes(len(data[i : i + 32]))
        if not data:
            break
    return bytes(data)


def _open_untrusted(path: Path) -> None:
    """What ``predict`` and ``validate`` do with a user's ONNX file."""
    from edgescale.bench.ort_model import OrtCausalLM
    from edgescale.export.mobile import op_coverage
    from edgescale.onnx_probe import probe_onnx

    probe = probe_onnx(path, timeout_s=120, need_session=False)  # a crash or hang stays in the child
    assert isinstance(probe.inputs, dict)
    op_coverage(path, "cpu")
    if probe.session_error is None:
        OrtCausalLM(path)


@fuzz(12)
@given(data=st.data())
def test_damaged_onnx_bytes_give_a_result_or_one_user_error(scratch, onnx_bases, data):
    path = scratch / "model.onnx"
    path.write_bytes(data.draw(damaged_onnx(onnx_bases)) if data.draw(st.integers(0, 5)) else data.draw(st.binary()))
    try:
        _open_untrusted(path)
    except UserError as e:
        assert str(path) in str(e)


def test_a_native_crash_or_hang_while_opening_is_one_user_error(monkeypatch, relu_onnx):
    """The child really dies (SIGSEGV) or really hangs; this process reports it and goes on."""
    from edgescale import onnx_probe

    monkeypatch.setattr(onnx_probe, "_PROBE_SCRIPT", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    with pytest.raises(UserError, match=f"{relu_onnx}: onnxruntime crashed opening this model \\(SIGSEGV\\)"):
        onnx_probe.probe_onnx(relu_onnx)
    monkeypatch.setattr(onnx_probe, "_PROBE_SCRIPT", "import time; time.sleep(60)")
    with pytest.raises(UserError, match="did not finish opening this model within 0.5 s"):
        onnx_probe.probe_onnx(relu_onnx, timeout_s=0.5)


def test_probe_reads_a_real_model(tiny_onnx):
    from edgescale.onnx_probe import probe_onnx

    probe = probe_onnx(tiny_onnx)
    assert "input_ids" in probe.inputs and "logits" in probe.outputs and probe.session_error is None
    assert onnx.load(str(tiny_onnx)).graph.input[0].name == "input_ids"
