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


def test_training_figures_reach_the_report_and_the_terminal(capsys) -> None:
    from types import SimpleNamespace

    from kubedistill.report import RunSummary, markdown, print_run_summary, training_from_metrics

    training = training_from_metrics(
        {
            "sft": {"n_in": 7, "medium.first_loss": 6.9, "medium.last_loss": 0.75, "medium.steps": 100},
            "dpo": {"n_in": 14, "first_loss": 0.693, "last_loss": 0.005, "steps": 12, "rewards.margins": 5.5},
            "reward_models": {"rv.mae_points": 1.2, "rv.spearman": 0.4, "dropped.no_score": 3},
            "verify": {"n_in": 9, "n_out": 7},
        }
    )
    assert set(training) == {"sft", "dpo", "reward_models"}  # data stages stay in the funnel
    assert "n_in" not in training["sft"] and "dropped.no_score" not in training["reward_models"]
    summary = RunSummary(pipeline="p", training=training)
    assert "## Training" in markdown(summary) and "| dpo | rewards.margins | 5.5 |" in markdown(summary)
    import json
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        f.write(summary.model_dump_json())
    print_run_summary(
        SimpleNamespace(outputs={"summary": f.name}, model_uri=None, tracking_uri=None, run_dir=".", elapsed_s=1.0)
    )
    out = capsys.readouterr().out
    assert "medium: 6.9 -> 0.75" in out and "rewards.margins=5.5" in out and "rv.spearman=0.4" in out
    assert json.loads(summary.model_dump_json())["training"]["dpo"]["steps"] == 12
