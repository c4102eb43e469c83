"""A teacher's identity (its label and its endpoint) and the completeness of an answer, against real
scripted OpenAI-compatible servers on 127.0.0.1.

* Two teachers that serve the same model name under different labels each get their own requests, and
  their rows are their own — in one batch (no dedup across teachers) and across runs (no shared cache).
* Replicas of one teacher share its cache: one URL in front of them, or one ``cache_identity``.
* An answer that is not a complete CoT (empty or whitespace content, ``content_filter``, no finish
  reason) is never taken for one: ``generate`` rejects it (``incomplete``) and does not cache it, the judge
  re-asks, the rewriter keeps the original, ``verify`` refuses imported CoTs of that kind.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kubedistill.chat import ChatClient, ChatRequest, ClientConfig, EndpointConfig
from kubedistill.cli import main
from kubedistill.core.records import Problem, Sample, StageStats, read_records, write_records
from kubedistill.cot.generate import GenerateConfig, generate
from kubedistill.cot.judge import JudgeConfig, judge_difficulty
from kubedistill.cot.rewrite import RewriteConfig, rewrite
from kubedistill.cot.verify import VerifyConfig, verify_samples
from kubedistill.testing.openai_server import ServerScript, free_port, read_log, running_server

pytestmark = pytest.mark.integration
FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "progress": False}


def _problems(n: int) -> list[Problem]:
    return [Problem(id=f"p{i}", problem=f"What is {i} + 1?", answer=str(i + 1), source="t") for i in range(n)]


def test_two_teachers_serving_the_same_model_name_each_answer_their_own(tmp_path: Path) -> None:
    """Two vLLM servers both serving `default`, labelled A and B: B is asked too, and B's rows are B's."""
    script_a = ServerScript(models=["default"], answers=[(".", "<think>A thinks</think> \\boxed{1}")])
    script_b = ServerScript(models=["default"], answers=[(".", "<think>B thinks</think> \\boxed{2}")])
    log_a, log_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    script_a.log_path, script_b.log_path = str(log_a), str(log_b)
    with running_server(script_a) as url_a, running_server(script_b) as url_b:
        cfg = GenerateConfig(
            teachers=[
                EndpointConfig(url=url_a, model="default", name="A"),
                EndpointConfig(url=url_b, model="default", name="B"),
            ],
            num_generations=2,
            client=ClientConfig(cache_dir=tmp_path / "cache", **FAST),
        )
        samples, stats = generate(_problems(3), cfg)
        assert len(read_log(log_a)) == 6 and len(read_log(log_b)) == 6  # nobody got 0 requests
        for s in samples:
            assert f"{s.teacher} thinks" in s.text, s  # each row is its teacher's own answer
        assert stats.info["teachers"]["B"]["requests"] == 6 and stats.info["teachers"]["B"]["cached"] == 0

        # a second run: every answer from the cache, each still under its own teacher
        again, stats2 = generate(_problems(3), cfg)
        assert [s.text for s in again] == [s.text for s in samples]
        assert stats2.metrics["teacher.cached"] == 12 and len(read_log(log_b)) == 6


def test_the_same_label_at_another_url_is_another_endpoint_unless_it_names_its_identity(tmp_path: Path) -> None:
    """A label re-pointed at another server (another checkpoint) does not get the old server's answers;
    replicas declared as one (`cache_identity`) share them."""
    log1, log2, log3 = (tmp_path / f"s{i}.jsonl" for i in (1, 2, 3))
    req = [ChatRequest(endpoint="t", messages=[{"role": "user", "content": "What is 2 + 2?"}], params={"seed": 1})]
    cfg = ClientConfig(cache_dir=tmp_path / "cache", **FAST)

    def ask(url: str, identity: str | None = None) -> None:
        client = ChatClient([EndpointConfig(url=url, model="scripted", name="t", cache_identity=identity)], cfg)
        try:
            [res] = client.run(req)
            assert res.ok
        finally:
            client.close()

    with running_server(ServerScript(log_path=str(log1))) as url1:
        ask(url1)
        ask(url1)  # the same endpoint: from the cache
    assert len(read_log(log1)) == 1
    with running_server(ServerScript(log_path=str(log2))) as url2:
        ask(url2)  # another URL under the same label: asked, not served someone else's answer
        ask(url2, identity="ckpt-1000")
    assert len(read_log(log2)) == 2
    with running_server(ServerScript(log_path=str(log3))) as url3:
        ask(url3, identity="ckpt-1000")  # a replica (another URL) of ckpt-1000: its cache is shared
    assert read_log(log3) == []


def test_extra_body_is_part_of_the_request() -> None:
    base = EndpointConfig(url="http://h:1/v1", model="m", name="t")
    other = base.model_copy(update={"extra_body": {"chat_template_kwargs": {"enable_thinking": False}}})
    req = ChatRequest(endpoint="t", messages=[{"role": "user", "content": "x"}])
    assert req.cache_key(base) != req.cache_key(other)
    assert req.cache_key(base) != req.cache_key(base.model_copy(update={"name": "u"}))
    assert req.cache_key(base) != req.cache_key(base.model_copy(update={"url": "http://h:2/v1"}))
    # credentials in the URL are not part of the identity (and never of a key)
    assert req.cache_key(base) == req.cache_key(base.model_copy(update={"url": "http://u:pw123456@h:1/v1"}))


INCOMPLETE = [
    # (problem text marker, content, finish_reason, why)
    ("What is 1 + 1?", "", "stop", "empty answer"),
    ("What is 2 + 1?", "   \n\t ", "stop", "empty answer"),
    ("What is 3 + 1?", "<think>x</think> \\boxed{4}", "content_filter", "finish_reason=content_filter"),
    ("What is 4 + 1?", "<think>x</think> \\boxed{5}", None, "no finish_reason"),
]


def _incomplete_script(log: Path) -> ServerScript:
    answers = [(re.escape(m), c) for m, c, _, _ in INCOMPLETE]
    finish = [(re.escape(m), f) for m, _, f, _ in INCOMPLETE]
    finish.append((r"What is 5 [+] 1\?", "length"))
    answers.append((r"What is 5 [+] 1\?", "<think>cut off in the mid"))
    return ServerScript(answers=answers, finish_reasons=finish, log_path=str(log))


def test_generate_rejects_answers_that_are_not_complete_cots_and_asks_again_next_run(tmp_path: Path) -> None:
    log = tmp_path / "server.jsonl"
    problems = _problems(7)  # p0: complete, p1-p4: incomplete, p5: truncated, p6: complete
    with running_server(_incomplete_script(log)) as url:
        cfg = GenerateConfig(
            teachers=[EndpointConfig(url=url, model="scripted", name="t")],
            client=ClientConfig(cache_dir=tmp_path / "cache", **FAST),
        )
        samples, stats = generate(problems, cfg)
        assert sorted(s.problem_id for s in samples) == ["p0", "p5", "p6"]
        assert next(s for s in samples if s.problem_id == "p5").finish_reason == "length"  # kept, marked
        assert stats.dropped == {"incomplete": 4}
        by_problem = {r.record["problem_id"]: r for r in stats.rejects}
        for (_, content, finish, why), pid in zip(INCOMPLETE, ("p1", "p2", "p3", "p4"), strict=True):
            r = by_problem[pid]
            assert why in r.detail and r.record["content"] == content and r.record["finish_reason"] == finish
        n = len(read_log(log))
        generate(problems, cfg)
        # complete and truncated answers came from the cache; the empty and finish-less ones were asked again
        again = read_log(log)[n:]
        assert len(again) == 3, again


def test_judge_rewriter_and_verify_do_not_take_an_incomplete_answer_for_one(tmp_path: Path) -> None:
    problems = _problems(3)
    samples = [
        Sample(
            problem_id=f"p{i}",
            teacher="t",
            temperature=0.6,
            sample_index=0,
            text=f"<think>{i} + 1 = {i + 1}</think> \\boxed{{{i + 1}}}",
            finish_reason="stop",
            difficulty="easy",
        )
        for i in range(3)
    ]
    script = ServerScript(
        answers=[(".", "<difficulty>hard</difficulty>")],
        finish_reasons=[(r"What is 0 \+", "content_filter"), (r"What is 1 \+", None)],
    )
    with running_server(script) as url:
        teacher = EndpointConfig(url=url, model="scripted", name="judge")
        judge_cfg = JudgeConfig(judge=teacher, max_reasks=0, client=ClientConfig(**FAST))
        judged, stats = judge_difficulty(samples, judge_cfg, problems=problems)
        # filtered and unfinished replies set no label (the CoTs keep theirs); the finished one does
        assert [s.difficulty for s in judged] == ["easy", "easy", "hard"]
        assert stats.metrics["difficulty.unparsable"] == 2

        # accept_untagged off: the finished reply (no <think> tags) is the third failure, in the strict format
        rewrite_cfg = RewriteConfig(rewriter=teacher, client=ClientConfig(**FAST), accept_untagged=False)
        rewritten, rstats = rewrite(samples, rewrite_cfg, problems=problems)
        assert rstats.info["counts"]["rewrite_failed"] == 3  # filtered, unfinished, and no <think> format
        whys = " ".join(f["why"] for f in rstats.info["failed"])
        assert "finish_reason=content_filter" in whys and "no finish_reason" in whys
        assert [s.id for s in rewritten] == [s.id for s in samples]  # the originals are kept

    imported = [
        samples[0].model_copy(update={"finish_reason": "content_filter"}),
        Sample(problem_id="p1", teacher="t", temperature=0.6, sample_index=0, text="  \n"),
        samples[2].model_copy(update={"finish_reason": None}),  # imported, no finish state: judged by its text
    ]
    verified, vstats = verify_samples(imported, VerifyConfig(), problems=problems)
    assert [s.problem_id for s in verified] == ["p2"]
    assert vstats.dropped == {"incomplete": 2}


def test_the_generate_command_shows_both_teachers_rows_and_rejects(tmp_path: Path) -> None:
    """The CLI path (runner + client) with two teachers on one model name, and one empty answer."""
    inp = tmp_path / "problems.jsonl"
    write_records(inp, _problems(2))
    out = tmp_path / "samples.jsonl"
    script_b = ServerScript(
        models=["default"], answers=[(r"What is 1 \+", "   "), (".", "<think>B</think> \\boxed{2}")]
    )
    with running_server(ServerScript(models=["default"])) as url_a, running_server(script_b) as url_b:
        teachers = [(url_a, "A"), (url_b, "B")]
        model = "default"
        flags = [x for u, n in teachers for x in ("--teacher-url", u, "--teacher-model", model, "--teacher-name", n)]
        rc = main(["generate", "--input", str(inp), "--output", str(out), "--no-tracking", "--no-progress", *flags])
    assert rc == 0
    rows = read_records(out, Sample)
    assert sorted((s.teacher, s.problem_id) for s in rows) == [("A", "p0"), ("A", "p1"), ("B", "p0")]
    assert all(("<think>B</think>" in s.text) == (s.teacher == "B") for s in rows)
    rejects = [json.loads(x) for x in (tmp_path / "samples.rejects.jsonl").read_text().splitlines()]
    got = [(r["reason"], r["record"]["teacher"], r["record"]["content"]) for r in rejects]
    assert got == [("incomplete", "B", "   ")]
    stats = json.loads((tmp_path / "samples.stats.json").read_text())
    assert stats["n_in"] == 2 and stats["n_out"] == 3 and stats["dropped"] == {"incomplete": 1}
    assert StageStats.model_validate(stats).stage == "generate"


def test_a_restarted_endpoint_at_the_same_url_keeps_its_cache(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "s.jsonl"
    cfg = GenerateConfig(temperatures=[0.6], client=ClientConfig(cache_dir=tmp_path / "cache", **FAST))
    for _ in range(2):
        with running_server(ServerScript(log_path=str(log)), port=port) as url:
            cfg.teachers = [EndpointConfig(url=url, model="scripted", name="t")]
            generate(_problems(2), cfg)
    assert len(read_log(log)) == 2
