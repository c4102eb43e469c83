from __future__ import annotations

from pathlib import Path

from kubedistill.report import RunSummary, funnel_from_metrics, markdown, render_html


def test_funnel_orders_stages_and_keeps_drop_reasons() -> None:
    rows = funnel_from_metrics(
        {
            "verify": {"n_in": 10, "n_out": 6, "dropped.incorrect": 3, "dropped.truncated": 1, "dropped.x": 0},
            "collect": {"n_in": 20, "n_out": 12, "dropped.duplicate": 8},
            "sft": {"n_in": 6, "n_out": 6},
        }
    )
    assert [r.stage for r in rows] == ["collect", "verify", "sft"]
    assert rows[1].dropped == {"incorrect": 3, "truncated": 1}


def test_html_report_has_tables_and_plots(tmp_path: Path) -> None:
    s = RunSummary(
        pipeline="slow-thinking",
        funnel=funnel_from_metrics({"collect": {"n_in": 20, "n_out": 12, "dropped.duplicate": 8}}),
        evaluation={
            "base": {"heldout": {"n_problems": 5, "accuracy": 0.2, "pass@1": 0.2, "lengths": {"mean": 50}}},
            "student": {"heldout": {"n_problems": 5, "accuracy": 0.4, "pass@1": 0.4, "lengths": {"mean": 40}}},
        },
        model_uri="models:/s/1",
    )
    s.lengths = {"base": [10, 20, 30], "student": [15, 25]}
    md = markdown(s)
    assert "| collect | 20 | 12 | duplicate: 8 |" in md and "models:/s/1" in md
    page = render_html(s)
    assert page.count("data:image/png;base64,") == 3  # funnel, accuracy, lengths
    assert "<table>" in page and "student" in page
