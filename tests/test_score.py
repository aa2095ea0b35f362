import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from telltale.score import score_values

NAB_FILE = (Path(__file__).resolve().parents[2] / "shared" / "data" / "nab-dev" / "data"
            / "realKnownCause" / "ec2_request_latency_system_failure.csv")


def telltale_score(*args):
    return subprocess.run([sys.executable, "-m", "telltale", "score", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def read_scores(path):
    rows = list(csv.reader(open(path)))
    assert rows[0] == ["timestamp", "value", "anomaly_score"]
    return rows[1:], np.array([float(r[2]) for r in rows[1:]])


@pytest.mark.parametrize("detector", ["likelihood", "zscore"])
def test_scores_are_online_bounded_and_flag_a_spike(detector):
    rng = np.random.default_rng(7)
    v = 10 + rng.standard_normal(2500)
    v[2000] = 30
    s = score_values(v, detector)
    assert s.shape == v.shape and np.all((s >= 0) & (s <= 1))
    assert s[2000:2010].max() == s.max() and s.max() > 0.7
    w = v.copy()
    w[2001:] = 1e6  # the future must not change the past
    np.testing.assert_array_equal(score_values(w, detector)[:2001], s[:2001])


def test_score_command_writes_one_row_per_input_row(tmp_path):
    src = tmp_path / "series.csv"
    with open(src, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["timestamp", "value"])
        for i in range(300):
            wr.writerow([f"2024-01-01 00:{i // 60:02d}:{i % 60:02d}", 5 + (i == 250) * 50])
    out = tmp_path / "scores.csv"
    proc = telltale_score(src, "--out", out, "--detector", "zscore")
    assert proc.returncode == 0, proc.stderr
    rows, scores = read_scores(out)
    assert len(rows) == 300 and scores[250] == scores.max()
    bad = tmp_path / "bad.csv"
    bad.write_text("time,val\n1,2\n")
    proc = telltale_score(bad)
    assert proc.returncode == 2 and "expected columns timestamp,value" in proc.stderr
    bad.write_text("timestamp,value\n2024-01-01 00:00:00,1\n2024-01-01 00:05:00,high\n")
    proc = telltale_score(bad)
    assert proc.returncode == 2 and "data row 2: value 'high' is not a number" in proc.stderr


def test_score_command_on_a_nab_file_is_strictly_online(tmp_path):
    assert NAB_FILE.exists(), f"{NAB_FILE} missing: the tests need ../shared/data/nab-dev"
    lines = NAB_FILE.read_text().splitlines()
    out = tmp_path / "full.csv"
    proc = telltale_score(NAB_FILE, "--out", out)  # default detector
    assert proc.returncode == 0, proc.stderr
    assert "with likelihood" in proc.stderr
    rows, scores = read_scores(out)
    assert len(rows) == len(lines) - 1
    assert [r[0] for r in rows] == [ln.split(",")[0] for ln in lines[1:]]
    assert np.all((scores >= 0) & (scores <= 1)) and scores.max() > 0.5
    prefix = tmp_path / "prefix.csv"
    prefix.write_text("\n".join(lines[:3001]) + "\n")
    proc = telltale_score(prefix, "--out", tmp_path / "prefix_scores.csv")
    assert proc.returncode == 0, proc.stderr
    _, head = read_scores(tmp_path / "prefix_scores.csv")
    np.testing.assert_array_equal(head, scores[:3000])
