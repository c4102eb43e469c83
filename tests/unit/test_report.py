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
    assert "| collect | 20 | 12 | duplicate: 8 | — |" in md and "models:/s/1" in md
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


def test_the_funnel_says_what_each_stage_did_and_warns_when_one_did_nothing() -> None:
    from kubedistill.report import stage_warnings

    metrics = {
        "collect": {"n_in": 30, "n_out": 24, "train": 20.0, "heldout": 4.0, "cots_in": 60.0, "cots_out": 40.0},
        "judge": {
            "n_in": 20,
            "n_out": 20,
            "difficulty.easy": 4.0,
            "difficulty.medium": 13.0,
            "difficulty.hard": 2.0,
            "difficulty.unparsable": 1.0,
            "difficulty.labelled_fraction": 0.95,
        },
        "rewrite": {
            "n_in": 20,
            "n_out": 20,
            "rewrite.extend": 4.0,
            "rewrite.simplify": 2.0,
            "rewrite.validated.moved_to_medium": 3.0,
            "rewrite.validated.stayed": 2.0,
            "rewrite.validated.wrong_answer": 1.0,
            "rewrite.kept": 3.0,
            "rewrite.dropped": 3.0,
        },
        "verify": {"n_in": 20, "n_out": 9, "n_correct": 9.0, "correct_rate": 0.45, "dropped.incorrect": 11},
        "dpo": {"n_in": 0, "n_out": 0, "skipped": 1.0},
    }
    rows = {r.stage: r for r in funnel_from_metrics(metrics)}
    assert rows["collect"].effect == "train 20, held out 4; CoTs imported 60, kept 40"
    assert rows["judge"].effect == "easy 4, medium 13, hard 2, unparsable 1, 95% labelled"
    assert rows["rewrite"].effect == (
        "extended 4, simplified 2; re-judged: moved to medium 3, stayed 2, wrong answer 1; kept 3, dropped 3"
    )
    assert rows["verify"].effect == "correct 9 (45%)" and rows["dpo"].effect == "skipped"
    assert stage_warnings(metrics) == [
        "dpo: did nothing — skipped (too few training rows); the model passed through unchanged"
    ]

    idle = {
        "judge": {"n_in": 20, "n_out": 20, "difficulty.unparsable": 20.0, "difficulty.labelled_fraction": 0.0},
        "rewrite": {"n_in": 20, "n_out": 20, "rewrite.extend": 0.0, "rewrite.simplify": 0.0},
    }
    warnings = stage_warnings(idle)
    assert any(w.startswith("judge: the judge gave only 0% of its difficulty labels") for w in warnings)
    assert "rewrite: did nothing — no CoT was rewritten (no CoT was judged easy or hard)" in warnings
    same = stage_warnings(
        {"judge": {"n_in": 9, "n_out": 9, "difficulty.easy": 9.0, "difficulty.labelled_fraction": 1.0}}
    )
    assert same == [
        "judge: the judge gave every one of its 9 CoTs the same difficulty label (easy): its labels carry no "
        "information (a bigger judge, or a rationale before the label, may help)"
    ]
    s = RunSummary(pipeline="p", funnel=funnel_from_metrics(idle), warnings=warnings)
    assert "## Warnings" in markdown(s)
    assert any("`constrained: true` helps small judges" in w for w in warnings)
    # replies cut at max_tokens: the warning names that cause, not the constraint a judge may already have
    cut = stage_warnings(
        {
            "score": {
                "n_in": 13,
                "n_out": 13,
                "cd.5": 8.0,
                "cd.8": 1.0,
                "cd.labelled_fraction": 0.62,
                "judge.truncated": 5,
            }
        }
    )
    assert cut == [
        "score: the judge gave only 62% of its cd labels in its format (unlabelled CoTs are counted, not "
        "labelled; 5 of its replies were cut at max_tokens: raise max_tokens or lower rationale_chars)"
    ]


def test_the_gap_between_student_and_base_comes_with_its_interval(tmp_path: Path, capsys) -> None:
    import json
    from types import SimpleNamespace

    from kubedistill.report import gap_line, load_comparison, print_run_summary

    (tmp_path / "compare").mkdir()
    pr = {"shared_problems": 100, "mean_delta": 0.31, "delta_ci95": [0.21, 0.41]}
    (tmp_path / "compare" / "comparison.json").write_text(
        json.dumps({"baseline": "base", "benchmarks": {"heldout": {"paired": {"student": pr}}}})
    )
    baseline, comparison = load_comparison(tmp_path)
    assert baseline == "base" and comparison == {"student": {"heldout": pr}}
    line = gap_line("base", "student", "heldout", pr)
    assert "+0.310, 95% interval [+0.210, +0.410]" in line and "outside the interval" in line
    assert "inside the interval" in gap_line("base", "s", "h", {"mean_delta": 0.1, "delta_ci95": [-0.05, 0.25]})
    summary = RunSummary(
        pipeline="p",
        evaluation={"student": {"heldout": {"n_problems": 100, "accuracy": 0.4, "accuracy_ci95": [0.31, 0.5]}}},
        comparison=comparison,
        baseline=baseline,
    )
    assert "| 0.400 | [0.310, 0.500] |" in markdown(summary)
    f = tmp_path / "summary.json"
    f.write_text(summary.model_dump_json())
    print_run_summary(
        SimpleNamespace(outputs={"summary": str(f)}, model_uri=None, tracking_uri=None, run_dir=".", elapsed_s=1.0)
    )
    out = capsys.readouterr().out
    assert "[0.310, 0.500]" in out and "student − base on heldout (100 problems, paired): +0.310" in out
