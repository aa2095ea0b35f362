import csv
import subprocess
import sys

import numpy as np

from telltale.score import score_values


def test_scores_are_online_bounded_and_flag_a_spike():
    rng = np.random.default_rng(7)
    v = 10 + rng.standard_normal(1000)
    v[800] = 30
    s = score_values(v)
    assert s.shape == v.shape and np.all((s >= 0) & (s <= 1))
    assert s[800] > 0.999 and np.argmax(s) == 800
    w = v.copy()
    w[801:] = 1e6  # the future must not change the past
    np.testing.assert_array_equal(score_values(w)[:801], s[:801])


def test_score_command_writes_one_row_per_input_row(tmp_path):
    src = tmp_path / "series.csv"
    with open(src, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["timestamp", "value"])
        for i in range(300):
            wr.writerow([f"2024-01-01 00:{i // 60:02d}:{i % 60:02d}", 5 + (i == 250) * 50])
    out = tmp_path / "scores.csv"
    proc = subprocess.run([sys.executable, "-m", "telltale", "score", str(src), "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.reader(open(out)))
    assert rows[0] == ["timestamp", "value", "anomaly_score"] and len(rows) == 301
    assert float(rows[251][2]) == max(float(r[2]) for r in rows[1:])
    bad = tmp_path / "bad.csv"
    bad.write_text("time,val\n1,2\n")
    proc = subprocess.run([sys.executable, "-m", "telltale", "score", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "expected columns timestamp,value" in proc.stderr
