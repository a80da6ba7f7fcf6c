"""State values as JSON, the one way the engine and the HTTP API write them.

The worker writes streamed events with it (`workflows.streams`) and the API its responses
(`api.convert.jsonable` is this function), so a value streamed and the same value read back
from a thread's state look the same to a client.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import to_jsonable_python


def jsonable(value: Any) -> Any:
    """A state value as JSON: pydantic models, dataclasses, Decimals, dates and LangChain
    messages as pydantic writes them; anything else by its repr rather than a 500."""
    return to_jsonable_python(value, fallback=repr)
