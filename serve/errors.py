"""Every error the HTTP API returns: JSON {"error": {"type", "message"}}; 4xx: client mistakes."""

from __future__ import annotations

from pydantic import ValidationError


class SchemaMismatch(ValueError):
    """A filter or payload that does not fit the served data's fields or types: the caller's
    mistake, raised where the data is (the snapshot, Qdrant retrieval) and answered with 400."""


class APIError(Exception):
    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"type": self.type, "message": self.message}}


def bad_request(message: str) -> APIError:
    return APIError(400, "invalid_request_error", message)


def server_error(error: Exception) -> APIError:
    """What a caller learns of a failure on the server's side: its kind, not its details."""
    return APIError(500, "server_error", f"the server failed ({type(error).__name__}); see its log")


def from_validation(error: ValidationError) -> APIError:
    """Pydantic's errors as one readable line per field, e.g. `k: Input should be >= 1`."""
    parts = []
    for err in error.errors():
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return bad_request("; ".join(parts))
