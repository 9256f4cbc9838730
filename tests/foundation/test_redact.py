"""Secrets never reach MLflow params, error tags or printed configs."""

from __future__ import annotations

import pytest

from refinery.redact import REDACTED, is_secret_key, redact, redact_text


@pytest.mark.parametrize(
    "key", ["password", "db_password", "API_KEYS", "api-key", "auth_token", "aws_secret_key"]
)
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["max_tokens", "keys_seen", "tokenizer", "monkey", "author"])
def test_ordinary_keys(key: str) -> None:
    assert not is_secret_key(key)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("s3://AKIA:secret@bucket/x", f"s3://{REDACTED}@bucket/x"),
        ("postgresql://u:p@db:5432/mlflow", f"postgresql://{REDACTED}@db:5432/mlflow"),
        ("failed: https://h/a?token=abc&b=1", f"failed: https://h/a?token={REDACTED}&b=1"),
        ("https://h/a?sig=1&api_key=z", f"https://h/a?sig=1&api_key={REDACTED}"),
        ("s3://bucket/plain/path", "s3://bucket/plain/path"),
        ("email me at a@b.org", "email me at a@b.org"),
    ],
)
def test_credentials_in_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


def test_redact_keeps_the_shape_and_the_ordinary_values() -> None:
    config = {
        "ray": {"runtime_env": {"env_vars": {"HF_TOKEN": "t", "OMP_NUM_THREADS": "2"}}},
        "serve": {"api_keys": ["k1", "k2"], "max_tokens": 64, "api_key": None},
        "uris": ["gs://u:p@b/x", "gs://b/y"],
    }
    assert redact(config) == {
        "ray": {"runtime_env": {"env_vars": {"HF_TOKEN": REDACTED, "OMP_NUM_THREADS": REDACTED}}},
        "serve": {"api_keys": REDACTED, "max_tokens": 64, "api_key": None},
        "uris": [f"gs://{REDACTED}@b/x", "gs://b/y"],
    }
    assert config["serve"]["api_keys"] == ["k1", "k2"]  # the input is not changed
