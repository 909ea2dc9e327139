"""calibrate's summary for people: a signed change against dense, and no speedup it did not measure."""

from __future__ import annotations

from tnt_cli.cli.calibrate import render, summary_line
from tnt_cli.engine import Schedule
from tnt_cli.eval.sweep import SweepPoint


def chosen(top1: float, dense: float, *, speedup: float | None = None) -> dict:
    return {
        "target": {"text": "at most 1 top-1 points below dense"},
        "schedule_text": "block 1 keep 0.3",
        "top1": top1,
        "dense_top1": dense,
        "drop_points": 100 * (dense - top1),
        "gmacs": 0.0132,
        "gmacs_ratio": 0.52,
        "speedup": speedup if speedup is not None else 1 / 0.52,
        "speedup_source": "measured" if speedup is not None else "gmacs ratio",
        "measured_on": {"images": 1000},
    }


def test_pruned_better_than_dense_reads_plus():
    line = summary_line(chosen(0.2071, 0.1602))
    assert "(dense 16.02%, +4.69 pts)" in line and "--" not in line


def test_pruned_worse_than_dense_reads_minus():
    assert "(dense 86.00%, -0.80 pts)" in summary_line(chosen(0.852, 0.86))


def test_no_speedup_unless_measured():
    line = summary_line(chosen(0.852, 0.86))
    assert "speedup" not in line and "1.92x fewer MACs" in line  # the GMACs ratio, labelled as such
    assert "speedup 1.45x (measured)" in summary_line(chosen(0.852, 0.86, speedup=1.45))


def points(speed: bool) -> list[SweepPoint]:
    dense = SweepPoint("dense", Schedule(), gmacs=0.0254, top1=0.86, speedup=1.0 if speed else None)
    tnt = SweepPoint("tnt", Schedule((1,), (0.3,)), gmacs=0.0132, top1=0.852, speedup=1.45 if speed else None)
    for p in (dense, tnt):
        p.pareto = True
    tnt.chosen = True
    return [dense, tnt]


def header(capsys) -> str:
    out = capsys.readouterr().out
    return next(line for line in out.splitlines() if "method" in line and "schedule" in line)


def test_table_has_no_speedup_column_without_measure_speed(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    summary = {"points": 2, "out": "calib", "chosen": chosen(0.852, 0.86)}
    render(summary, points(speed=False))
    assert "speedup" not in header(capsys)
    render({**summary, "chosen": chosen(0.852, 0.86, speedup=1.45)}, points(speed=True))
    assert "speedup" in header(capsys)


def test_no_change_reads_plus_zero():
    assert "(dense 78.90%, +0.00 pts)" in summary_line(chosen(0.789, 0.789))
