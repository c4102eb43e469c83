"""kubedistill/core/secrets.py: one place that knows what a secret is and how text is redacted."""

import pytest

from kubedistill.core.secrets import (
    MASK,
    is_secret_name,
    mask,
    mask_url,
    redact,
    secret_paths,
    secret_values,
    strip_url,
)


def test_secret_names_and_values() -> None:
    for name in ("HF_TOKEN", "api_key", "AWS_SECRET_ACCESS_KEY", "password", "OPENAI_API_KEY", "clientSecret"):
        assert is_secret_name(name), name
    for name in ("max_tokens", "timeout_per_token_s", "api_key_env", "keep_all", "tokenizer"):
        assert not is_secret_name(name), name
    env = {"HF_TOKEN": "hf_abcdefgh", "SHORT_TOKEN": "abc", "MODEL": "qwen"}
    assert secret_values(env) == {"hf_abcdefgh"}  # too short to redact safely: left out


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        ("HTTP 401: invalid key sk-live-0123456789abcdef0123", "sk-live-0123456789abcdef0123"),
        (
            '{"error": {"message": "Incorrect API key provided: sk-proj-AAAAbbbbCCCCdddd1234"}}',
            "sk-proj-AAAAbbbbCCCCdddd1234",
        ),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9.payload.sig"),
        ("authorization=Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
        ("url http://user:hunter22@host:8000/v1 refused", "hunter22"),
        ("api_key=abcd1234efgh", "abcd1234efgh"),
        ('{"password": "correct horse"}', "correct"),
        ("token hf_ABCDEFGHIJKLMNOPQRSTUV leaked", "hf_ABCDEFGHIJKLMNOPQRSTUV"),
    ],
)
def test_redact_removes_credentials_from_free_text(text: str, leaked: str) -> None:
    out = redact(text, secrets=[])
    assert leaked not in out and MASK in out
    assert redact(out, secrets=[]) == out  # idempotent


def test_redact_removes_known_secret_values_and_leaves_prose_alone() -> None:
    assert redact("the key is s3cr3t-value!", secrets=["s3cr3t-value"]) == "the key is ***!"
    prose = "max_tokens: 4096; basic arithmetic; token throughput 200/s; the bearer of bad news"
    assert redact(prose, secrets=[]) == prose


def test_mask_and_paths_of_json_like_values() -> None:
    obj = {"a": {"api_key": "sk-1", "api_key_env": "K", "url": "https://u:p@h/v1", "max_tokens": 8}, "l": ["x"]}
    masked = mask(obj, secrets=[])
    assert masked["a"] == {"api_key": MASK, "api_key_env": "K", "url": "https://***@h/v1", "max_tokens": 8}
    assert sorted(secret_paths(obj, secrets=[])) == ["a.api_key", "a.url"]
    assert mask_url("https://u:p@h/v1") == "https://***@h/v1" and mask_url(None) is None
    assert strip_url("https://u:p@h:8443/v1?key=abc#x") == "https://h:8443/v1"
