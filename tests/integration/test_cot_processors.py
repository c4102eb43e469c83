"""The CoT processors against a real local OpenAI-compatible server (scripted answers):
generate -> judge difficulty -> rewrite -> verify, RV/CD scoring -> select -> pairs, and the LLM-judge
fallback of verify for problems without a reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubedistill.chat.config import ClientConfig, EndpointConfig
from kubedistill.core.records import Problem
from kubedistill.cot.generate import GenerateConfig, generate
from kubedistill.cot.judge import JudgeConfig, judge_difficulty, score_rv_cd
from kubedistill.cot.pairs import PairsConfig, make_pairs
from kubedistill.cot.rewrite import RewriteConfig, rewrite
from kubedistill.cot.select import SelectConfig, select
from kubedistill.cot.verify import VerifyConfig, verify_samples
from kubedistill.testing.openai_server import ServerScript, read_log, running_server

pytestmark = pytest.mark.integration

ANSWERS = [
    # difficulty judge, re-judging an extended CoT: it is balanced now
    (r"(?s)Write the sum\. Add the ones\..*Classify", "Every step is there.\n<difficulty>medium</difficulty>"),
    # difficulty judge: by problem
    (r"(?s)Problem:\nWhat is [0-2] \+.*Classify", "Skips steps.\n<difficulty>easy</difficulty>"),
    (r"(?s)Problem:\nWhat is [3-5] \+.*Classify", "Balanced.\n<difficulty>medium</difficulty>"),
    (r"(?s)Problem:\nWhat is [6-7] \+.*Classify", "It is rather long, I would say."),  # unparsable
    (r"did not end with the label", "<difficulty>hard</difficulty>"),  # ... until re-asked
    # rewriter
    (
        r"small model can follow every step",
        "<think>\nWrite the sum. Add the ones.\n</think>\n\nThe answer is \\boxed{2}.",
    ),
    (r"clear, direct derivation", "<think>\nAdd.\n</think>\n\nThe answer is \\boxed{8}."),
    # RV / CD judges
    (r"REASONING VERBOSITY", "Short and direct.\n<score>3</score>"),
    (r"COGNITIVE DIFFICULTY", "Routine.\n<score>2</score>"),
    # correctness fallback
    (r"Proposed solution", "The steps hold.\n<verdict>1</verdict>"),
]


@pytest.fixture
def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    log = tmp_path / "server.jsonl"
    with running_server(ServerScript(answers=ANSWERS, log_path=str(log))) as url:
        yield EndpointConfig(url=url, model="scripted", name="teacher"), log


def _problems() -> list[Problem]:
    return [Problem(id=f"p{i}", problem=f"What is {i} + 1?", answer=str(i + 1), source="t") for i in range(8)]


def test_slow_thinking_data_stages(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    teacher, log = server
    client_cfg = ClientConfig(cache_dir=tmp_path / "cache", progress=False)
    problems = _problems()
    samples, _ = generate(problems, GenerateConfig(teachers=[teacher], temperatures=[0.6], client=client_cfg))
    assert len(samples) == 8

    judged, jstats = judge_difficulty(samples, JudgeConfig(judge=teacher, client=client_cfg), problems=problems)
    labels = {s.problem_id: s.difficulty for s in judged}
    assert labels == {
        "p0": "easy",
        "p1": "easy",
        "p2": "easy",
        "p3": "medium",
        "p4": "medium",
        "p5": "medium",
        "p6": "hard",
        "p7": "hard",
    }
    j = judged[6].judgements["difficulty"]
    assert (j.by, j.prompt, j.attempts) == ("teacher", "judge_difficulty@v1", 2)  # re-asked once
    assert "rather long" in (j.raw or "") and "<difficulty>hard</difficulty>" in (j.raw or "")
    assert jstats.info["difficulty"]["reasked"] == 2
    assert jstats.metrics["difficulty.easy"] == 3 and jstats.metrics["difficulty.hard"] == 2
    assert jstats.metrics["difficulty.labelled_fraction"] == 1.0

    rewritten, rstats = rewrite(
        judged, RewriteConfig(rewriter=teacher, client=client_cfg, keep_rewrites="all"), problems=problems
    )
    assert rstats.info["counts"] == {"extend": 3, "simplify": 2, "rewrite_failed": 0}
    assert rstats.metrics["rewrite.kept"] == 5 and "validation" not in rstats.info  # `all`: no re-judging
    rw = {s.problem_id: s for s in rewritten if s.rewritten_from}
    assert set(rw) == {"p0", "p1", "p2", "p6", "p7"} and len(rewritten) == 8  # replaced, not added
    assert rw["p1"].id == "p1::teacher::t0.6::0::rw" and rw["p1"].rewritten_from == "p1::teacher::t0.6::0"
    assert rw["p1"].difficulty == "medium" and rw["p7"].difficulty == "hard"
    assert rw["p1"].judgements["rewrite"].prompt == "rewrite_extend@v1"

    verified, vstats = verify_samples(rewritten, VerifyConfig(), problems=problems)
    # originals p3-p5 are right; of the rewrites only p1 (1+1=2) and p7 (7+1=8) are
    assert sorted(s.problem_id for s in verified) == ["p1", "p3", "p4", "p5", "p7"]
    assert vstats.dropped == {"incorrect": 3}

    # asking again repeats nothing: every judge and rewrite answer is cached
    n = len(read_log(log))
    judge_difficulty(samples, JudgeConfig(judge=teacher, client=client_cfg), problems=problems)
    assert len(read_log(log)) == n


def test_rewrites_are_validated_rejudged_and_verified(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """evaluate, improve, validate: every rewrite is verified and judged again; the policy keeps or drops it."""
    teacher, _ = server
    client_cfg = ClientConfig(cache_dir=tmp_path / "cache", progress=False)
    problems = _problems()
    samples, _ = generate(problems, GenerateConfig(teachers=[teacher], temperatures=[0.6], client=client_cfg))
    judged, _ = judge_difficulty(samples, JudgeConfig(judge=teacher, client=client_cfg), problems=problems)

    # medium (DistilQwen2.5-R1): keep a rewrite that now judges medium and whose answer is right.
    # Extended p0-p2 judge medium, but only p1's answer (2) is right; simplified p6/p7 stay hard.
    out, stats = rewrite(judged, RewriteConfig(rewriter=teacher, client=client_cfg), problems=problems)
    assert stats.info["validation"] == {
        "moved_to_medium": 1,
        "stayed": 1,
        "moved_other": 0,
        "unlabelled": 0,
        "wrong_answer": 3,
    }
    assert stats.metrics["rewrite.kept"] == 1 and stats.metrics["rewrite.dropped"] == 4
    by_problem = {s.problem_id: s for s in out}
    assert len(out) == 8 and by_problem["p1"].rewritten_from and by_problem["p1"].difficulty == "medium"
    assert (
        by_problem["p1"].correct is True and by_problem["p1"].judgements["difficulty"].prompt == "judge_difficulty@v1"
    )
    assert not by_problem["p7"].rewritten_from and by_problem["p7"].difficulty == "hard"  # the original stays
    assert {d["outcome"] for d in stats.info["dropped_rewrites"]} == {"stayed", "wrong_answer"}

    # verified: every rewrite whose answer is right, with its new label (p7 stayed hard)
    out, stats = rewrite(
        judged, RewriteConfig(rewriter=teacher, client=client_cfg, keep_rewrites="verified"), problems=problems
    )
    kept = {s.problem_id: s.difficulty for s in out if s.rewritten_from}
    assert kept == {"p1": "medium", "p7": "hard"} and stats.metrics["rewrite.kept"] == 2

    # dropped_rewrites: none — a CoT whose rewrite failed validation goes too, as a reject with its reason
    out, stats = rewrite(
        judged, RewriteConfig(rewriter=teacher, client=client_cfg, dropped_rewrites="none"), problems=problems
    )
    assert len(out) == 4 and stats.dropped == {"rewrite_rejected": 4}

    # the run report's funnel row says what happened
    from kubedistill.report import stage_effect

    effect = stage_effect("rewrite", stats.metrics)
    assert "extended 3, simplified 2" in effect and "moved to medium 1" in effect and "dropped 4" in effect


def test_adaptive_thinking_scores_select_and_pairs(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    teacher, _ = server
    problems = _problems()
    samples, _ = generate(
        problems, GenerateConfig(teachers=[teacher], temperatures=[0.6, 0.9], client=ClientConfig(progress=False))
    )
    verified, _ = verify_samples(samples, VerifyConfig(), problems=problems)
    scored, sstats = score_rv_cd(
        verified, JudgeConfig(judge=teacher, client=ClientConfig(progress=False)), problems=problems
    )
    assert {(s.rv, s.cd) for s in scored} == {(3, 2)}
    assert scored[0].judgements["rv"].prompt == "judge_rv@v1" and scored[0].judgements["cd"].prompt == "judge_cd@v1"
    assert sstats.info["rv"] == {"3": 16}
    chosen, _ = select(scored, SelectConfig(profile="small", per_problem=1))
    assert len(chosen) == 8 and len({s.problem_id for s in chosen}) == 8
    none_fit, stats = select(scored, SelectConfig(profile="large"))  # large: rv 3-9 fits, cd 3-9 does not
    assert none_fit == [] and stats.dropped == {"cd_out_of_window": 16}
    pairs, _ = make_pairs(chosen, PairsConfig(pairs_per_sample=1), problems=problems)
    assert pairs and all(p.chosen != p.rejected for p in pairs)


def test_verify_falls_back_to_an_llm_judge_without_a_reference(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    teacher, _ = server
    problems = [Problem(id="open", problem="Explain why 2 + 2 = 4.", source="t", domain="general")]
    samples, _ = generate(problems, GenerateConfig(teachers=[teacher], client=ClientConfig(progress=False)))
    kept, stats = verify_samples(samples, VerifyConfig(), problems=problems)
    assert kept == [] and stats.dropped == {"unverifiable": 1}
    kept, stats = verify_samples(samples, VerifyConfig(judge_fallback=teacher), problems=problems)
    assert len(kept) == 1 and kept[0].correct is True
    assert (
        kept[0].judgements["correct"].by == "llm-judge" and "judge_correct@v1" in kept[0].judgements["correct"].detail
    )


def test_the_judge_can_label_only_verified_cots(server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    teacher, log = server
    problems = _problems()
    samples, _ = generate(problems, GenerateConfig(teachers=[teacher], client=ClientConfig(progress=False)))
    checked, _ = verify_samples(samples, VerifyConfig(keep_all=True), problems=problems)
    checked[0].correct = False  # one wrong CoT: it passes through unjudged
    n = len(read_log(log))
    judged, stats = judge_difficulty(
        checked, JudgeConfig(judge=teacher, only_correct=True, client=ClientConfig(progress=False)), problems=problems
    )
    assert len(judged) == 8 and judged[0].difficulty is None and "difficulty" not in judged[0].judgements
    assert stats.metrics["not_judged.not_correct"] == 1
    assert len(read_log(log)) - n == 7 + 2  # seven CoTs judged, two of them re-asked once
