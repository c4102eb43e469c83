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


def test_known_secrets_come_from_the_environment_configs_and_what_was_read(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubedistill.core.secrets import config_secrets, forget_all, known_secrets, remember, url_secrets

    monkeypatch.setenv("PLAIN_VAR", "value-of-plain-var")
    monkeypatch.setenv("DATABASE_URL", "postgres://app:db-password-1@db/app")
    assert "db-password-1" in known_secrets()  # a password in any variable's URL
    assert "value-of-plain-var" not in known_secrets()
    cfg = {
        "teachers": [{"url": "https://u:url-pass-99@h/v1?api_key=query-key-77", "api_key_env": "PLAIN_VAR"}],
        "extra_body": {"token": "body-token-55"},
        "max_tokens": 4096,
    }
    assert config_secrets(cfg) == {"url-pass-99", "query-key-77", "value-of-plain-var", "body-token-55"}
    assert url_secrets("https://tok123456@h/v1") == ["tok123456"]
    try:
        remember("read-at-runtime-1", "x")  # too short values are never remembered
        assert "read-at-runtime-1" in known_secrets() and "x" not in known_secrets()
        assert redact("key read-at-runtime-1 here") == "key *** here"
    finally:
        forget_all()


def test_json_escaped_secret_values_are_redacted_too() -> None:
    from kubedistill.core.secrets import redact_values

    secret = 'p"a\\ss-word'
    assert redact_values('{"x": "p\\"a\\\\ss-word"}', [secret]) == '{"x": "***"}'
    assert redact_values('plain p"a\\ss-word', [secret]) == "plain ***"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # an error body that quotes the header in brackets (the 400 of the canary test): the scheme and the
        # closing bracket stay, the credentials go
        ("(headers: Authorization: Bearer abcdefghij123)", "(headers: Authorization: Bearer ***)"),
        ("[Authorization: Basic dXNlcjpwYXNz] and more", "[Authorization: Basic ***] and more"),
        ('{"authorization": "Bearer abcdefghij123"}', '{"authorization": "Bearer ***"}'),
        ("authorization=Token abcdef12345", "authorization=Token ***"),
        ("Authorization: abcdefgh1234]", "Authorization: ***]"),
        # a bracket inside the credentials is theirs: masked with them
        ("Authorization: Bearer abc)def1234567", "Authorization: Bearer ***"),
        # another credential key with an HTTP scheme before its value: the whole value goes
        ("secret: Basic dXNlcjpwYXNz ok", "secret: *** ok"),
        ('"api_key": "Bearer abcdefghij123"', '"api_key": "***"'),
    ],
)
def test_an_authorization_value_is_masked_and_the_text_around_it_kept(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected  # idempotent
