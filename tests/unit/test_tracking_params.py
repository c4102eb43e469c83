from __future__ import annotations

import pytest

from kubedistill.tracking import safe_params


def test_safe_params_flattens_and_keeps_token_counts_but_drops_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEACHER_API_KEY", "sk-very-secret-123")
    params = {
        "generate": {"max_tokens": 4096, "client": {"timeout_per_token_s": 0.05}},
        "teachers": [{"url": "http://t/v1", "api_key_env": "TEACHER_API_KEY", "api_key": "sk-very-secret-123"}],
        "hf_token": "hf_abcdefgh",
        "note": "key is sk-very-secret-123",
    }
    out = safe_params(params)
    assert out["generate.max_tokens"] == "4096"
    assert out["generate.client.timeout_per_token_s"] == "0.05"
    assert out["teachers.0.api_key_env"] == "TEACHER_API_KEY"  # the variable's name, not its value
    assert "teachers.0.api_key" not in out and "hf_token" not in out
    assert out["note"] == "key is ***"  # a secret value from the environment never leaves: redacted


def test_safe_params_redacts_credentials_in_urls_and_remembered_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubedistill.core.secrets import forget_all, remember

    monkeypatch.setenv("PLAIN_NAMED_VAR", "canary-value-42")  # its name does not say "secret"
    remember("canary-value-42")  # but an api_key_env named it: the client remembered it
    try:
        out = safe_params({"teachers": [{"url": "http://user:hunter2222@t/v1"}], "x": "canary-value-42"})
    finally:
        forget_all()
    assert out["teachers.0.url"] == "http://***@t/v1"
    assert out["x"] == "***"
