"""The one client every call to an OpenAI-compatible chat endpoint goes through: teachers, judges,
rewriters and the students under evaluation (see client.py)."""

from kubedistill.chat.cache import RequestCache
from kubedistill.chat.client import (
    ChatClient,
    ChatRequest,
    ChatResult,
    ClientStats,
    EndpointError,
    MalformedResponse,
    derived_seed,
)
from kubedistill.chat.config import ClientConfig, EndpointConfig

__all__ = [
    "ChatClient",
    "ChatRequest",
    "ChatResult",
    "ClientConfig",
    "ClientStats",
    "EndpointConfig",
    "EndpointError",
    "MalformedResponse",
    "RequestCache",
    "derived_seed",
]
