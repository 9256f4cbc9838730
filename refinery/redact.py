"""Secrets out of what Refinery records: MLflow params, error tags, printed configs.

A value is a secret when its key says so (password, token, api_keys, ...), when it is an
environment variable handed to Ray workers (runtime_env env_vars: their names stay, values go),
or when it is the credentials part of a URI (`s3://KEY:SECRET@bucket`, `?token=...`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***"

_SECRET_WORDS = {
    "password", "passwd", "secret", "token", "credential", "credentials", "apikey",
    "api_key", "api_keys", "access_key", "secret_key", "private_key", "auth", "authorization",
}  # fmt: skip
# Keys whose values are all secrets, whatever the names inside.
_SECRET_CONTAINERS = {"env_vars"}
_URI_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")
_QUERY_SECRET = re.compile(
    r"(?P<name>[?&][^=&#\s]*(?:token|secret|signature|password|passwd|key|credential)[^=&#\s]*=)"
    r"[^&#\s]+",
    re.IGNORECASE,
)


def is_secret_key(key: str) -> bool:
    """`api_keys`, `db_password`, `MY_TOKEN` are secrets; `max_tokens`, `keys_seen` are not."""
    name = key.lower().replace("-", "_")
    return name in _SECRET_WORDS or any(name.endswith(f"_{word}") for word in _SECRET_WORDS)


def redact_text(text: str) -> str:
    """Credentials inside URIs in free text (error messages, URIs) replaced by ***."""
    text = _URI_USERINFO.sub(rf"\g<scheme>{REDACTED}@", text)
    return _QUERY_SECRET.sub(rf"\g<name>{REDACTED}", text)


def redact(value: Any, key: str = "") -> Any:
    """A copy of a config tree (dicts, lists, scalars) with every secret value replaced."""
    if isinstance(value, Mapping):
        if key in _SECRET_CONTAINERS:
            return {k: REDACTED for k in value}
        return {k: redact(v, str(k)) for k, v in value.items()}
    if key and is_secret_key(key) and value not in (None, "", [], ()):
        return REDACTED
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
