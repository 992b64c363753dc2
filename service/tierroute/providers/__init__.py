"""Model providers behind one small Protocol; see `base`."""

from tierroute.providers.base import Completion, Message, Provider, ToolSpec

__all__ = ["Completion", "Message", "Provider", "ToolSpec"]
