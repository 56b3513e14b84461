"""CSV loading for fits: malformed files give one clear message."""

import math

import pytest

from edgescale.errors import UserError
from edgescale.results.points import load_points
from edgescale.scaling.points import read_csv

GOOD = "N,D,loss\n" + "".join(f"{10 ** (6 + i)},{10 ** (8 + i)},{3 - 0.1 * i}\n" for i in range(6))


def test_reads_a_good_csv_case_insensitively(tmp_path):
    p = tmp_path / "runs.csv"
    p.write_text(GOOD.replace("N,D,loss", "n,d,Loss,extra").replace("\n1", ",x\n1"))
    pts = read_csv(p)
    assert pts.n.size == 6 and pts.loss[0] == 3.0


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("N,tokens,loss\n1,2,3\n", "missing column(s) D"),
        ("", "empty file"),
        (GOOD + "1e9,-5,2.0\n", "D = -5 must be a positive"),
        (GOOD + "1e9,1e9,nan\n", "loss = nan must be a positive"),
        (GOOD + "1e9,abc,2.0\n", "D = 'abc' is not a number"),
        ("N,D,loss\n1,2,3\n", "a fit needs at least 5"),
    ],
)
def test_malformed_csv_is_a_clear_error(tmp_path, text, fragment):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(UserError) as e:
        read_csv(p)
    assert fragment in str(e.value) and str(p) in str(e.value)


def test_missing_source_and_non_run_directory(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        load_points(tmp_path / "nope.csv")
    with pytest.raises(UserError, match="not a finished edgescale run"):
        load_points(tmp_path)


def _curve(n: int, seed: int = 0) -> list[dict]:
    """Periodic points (not in the fit), two cooled branches in the fit, and one cooled point left out."""
    bpb = lambda d: 2 + 10 / n**0.3 + 5 / d**0.3 + 0.01 * seed  # noqa: E731
    out = [{"tokens": d, "val_bpb": bpb(d) + 0.2, "cooled": False, "in_fit": False} for d in (1000, 2000)]
    out += [{"tokens": d, "val_bpb": bpb(d), "cooled": True, "in_fit": True} for d in (2000, 4000)]
    return out + [{"tokens": 3000, "val_bpb": bpb(3000), "cooled": True, "in_fit": False}]


def _sizes(old: bool = False) -> list[dict]:
    sizes = [
        {"size": f"s{i}", "params_total": n, "train_tokens": 4000, "distilled_from": None, "curve": _curve(n),
         "seed_runs": [{"seed": 1, "train_tokens": 4000, "curve": _curve(n, 1)}] if i == 0 else []}
        for i, n in enumerate((10_000, 40_000, 160_000))
    ]  # fmt: skip
    sizes.append({**sizes[0], "size": "s0-kd", "distilled_from": "s2", "seed_runs": []})  # not a ladder size
    if old:  # before in_fit was recorded: the cooled points are the fit's
        for s in sizes:
            for c in [*s["curve"], *(c for r in s["seed_runs"] for c in r["curve"])]:
                c.pop("in_fit", None)
    return sizes


def test_run_points_are_the_runs_own_fit_points_with_seed_runs(tmp_path):
    from edgescale.results.assemble import _fit_runs
    from edgescale.results.schema import Size
    from edgescale.scaling.points import from_sizes
    from edgescale.scaling.study import cooled_points

    sizes = _sizes()
    pts = from_sizes([Size.model_validate(s) for s in sizes], tmp_path / "results.json")
    # the in_fit points only: 2 per run, 3 ladder runs + s0's second seed (the distilled size and the
    # periodic and left-out cooled points are not in the fit)
    assert pts.n.size == 8 and set(pts.d) == {2000, 4000}
    assert pts.groups == ("s0",) * 2 + ("s1",) * 2 + ("s2",) * 2 + ("s0@seed1",) * 2
    # exactly what the run's own fit takes (assemble._fit_runs -> study.cooled_points), keyed the same
    own = cooled_points(_fit_runs(sizes))
    mine = [(g, n, d, round(x / math.log(2), 9)) for g, n, d, x in zip(pts.groups, pts.n, pts.d, pts.loss, strict=True)]
    assert sorted(mine) == sorted((p["size"], p["N"], p["D"], round(p["bits_per_byte"], 9)) for p in own)
    # an older run without in_fit: its cooled points (the left-out one included: nothing says otherwise)
    old = from_sizes([Size.model_validate(s) for s in _sizes(old=True)], tmp_path / "results.json")
    assert old.n.size == 12 and 3000 in set(old.d)


def test_run_fit_resamples_whole_runs(tmp_path, monkeypatch):
    from edgescale.scaling import identify
    from edgescale.scaling.points import from_sizes

    seen = {}

    def fake(n, d, loss, **kw):
        seen.update(kw)
        raise RuntimeError("stop")

    monkeypatch.setattr(identify, "fit_identified", fake)
    from edgescale.results.schema import Size

    pts = from_sizes([Size.model_validate(s) for s in _sizes()], tmp_path / "results.json")
    with pytest.raises(RuntimeError, match="stop"):
        identify.law_from_points(pts, "fit:run")
    assert seen["groups"] == pts.groups


def test_too_few_fit_points_in_a_run_is_a_clear_error(tmp_path):
    from edgescale.results.schema import Size
    from edgescale.scaling.points import from_sizes

    sizes = _sizes()[:2]
    sizes[0]["seed_runs"] = []
    with pytest.raises(UserError, match="4 .* points of the run's scaling fit"):
        from_sizes([Size.model_validate(s) for s in sizes], tmp_path / "results.json")
