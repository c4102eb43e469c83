from __future__ import annotations

from pathlib import Path

import pytest

from kubedistill.chat.config import EndpointConfig
from kubedistill.core.config import ConfigError, load_config
from kubedistill.cot.generate import GenerateConfig


def test_teacher_url_normalised() -> None:
    assert EndpointConfig(url="http://h:8000", model="m").url == "http://h:8000/v1"
    assert EndpointConfig(url="http://h:8000/v1/", model="m").url == "http://h:8000/v1"
    assert EndpointConfig(url="https://h/openai/v1", model="m").url == "https://h/openai/v1"
    with pytest.raises(ValueError, match="http"):
        EndpointConfig(url="h:8000", model="m")


def test_unknown_key_and_wrong_type_are_one_line_errors(tmp_path: Path) -> None:
    p = tmp_path / "gen.yaml"
    p.write_text("teachers: [{url: 'http://x', model: m}]\ntemperatures: [hot]\nsampels: 2\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, GenerateConfig)
    msg = str(e.value)
    assert "\n" not in msg
    assert "temperatures.0" in msg and "'hot'" in msg
    assert "sampels: unknown key" in msg


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("teachers: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p, GenerateConfig)
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "none.yaml", GenerateConfig)


def test_duplicate_teachers_and_temperatures_rejected() -> None:
    t = {"url": "http://x", "model": "m"}
    with pytest.raises(ValueError, match="teacher names repeat"):
        GenerateConfig.model_validate({"teachers": [t, t]})
    with pytest.raises(ValueError, match="temperatures repeat"):
        GenerateConfig.model_validate({"teachers": [t], "temperatures": [0.6, 0.6]})


def test_api_key_comes_from_named_env(monkeypatch: pytest.MonkeyPatch) -> None:
    t = EndpointConfig(url="http://x", model="m", api_key_env="KD_TEST_KEY")
    monkeypatch.delenv("KD_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="KD_TEST_KEY"):
        t.api_key()
    monkeypatch.setenv("KD_TEST_KEY", "sk-123")
    assert t.api_key() == "sk-123"


def test_timeout_scales_with_max_tokens() -> None:
    c = GenerateConfig.model_validate({"teachers": [{"url": "http://x", "model": "m"}]}).client
    assert c.attempt_timeout(32768) > 1600  # a 32K-token CoT must not be cut at 600 s
    assert c.attempt_timeout(256) < 120
