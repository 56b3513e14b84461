"""CSV loading for fits: malformed files give one clear message."""

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
