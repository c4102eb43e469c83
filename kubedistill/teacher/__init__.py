"""The one client every teacher and judge call goes through (see client.py)."""

from kubedistill.teacher.cache import RequestCache
from kubedistill.teacher.client import (
    ChatRequest,
    ChatResult,
    ClientStats,
    MalformedResponse,
    TeacherClient,
    TeacherError,
)

__all__ = [
    "ChatRequest",
    "ChatResult",
    "ClientStats",
    "MalformedResponse",
    "RequestCache",
    "TeacherClient",
    "TeacherError",
]
