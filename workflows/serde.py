"""How checkpoint values become bytes: strict msgpack, optionally AES-encrypted.

Reviewer-edited state is read back by a deserializer, so the deserializer must never
be a way to run code: no pickle, no JSON constructor revival, and msgpack revives
only LangGraph's safe types plus the types named by the project (and, at compile
time, the types of each graph's state schema).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer


class PlaintextRefused(ValueError):
    """A stored value was not encrypted although an encryption key is configured."""


class SealedSerializer(EncryptedSerializer):
    """`EncryptedSerializer` that refuses rows written without encryption.

    LangGraph's own serializer reads an untagged row as plaintext, which would let
    anyone with write access to the table slip in unencrypted (and unauthenticated)
    state. Here every row must carry the cipher tag.
    """

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        type_tag = data[0]
        if "+" not in type_tag:
            raise PlaintextRefused(
                f"refusing to read a checkpoint value stored without encryption (type {type_tag!r}) "
                "while SIGNOFF_ENCRYPTION_KEY is set; it was written before the key was set or "
                "behind the app's back"
            )
        return super().loads_typed(data)


def make_serde(*, key: bytes | None, allowlist: Iterable[tuple[str, ...] | type] = ()) -> SerializerProtocol:
    """The serializer for checkpoints: strict msgpack, sealed with AES-EAX when `key` is set."""
    plain = JsonPlusSerializer(
        pickle_fallback=False,
        allowed_json_modules=None,
        # None (rather than an empty list) is what selects LangGraph's strict mode.
        allowed_msgpack_modules=list(allowlist) or None,
    )
    if key is None:
        return plain
    aes = EncryptedSerializer.from_pycryptodome_aes(serde=plain, key=key)
    return SealedSerializer(aes.cipher, plain)


def default_serde() -> SerializerProtocol:
    from django.conf import settings

    return make_serde(
        key=settings.SIGNOFF_ENCRYPTION_KEY,
        allowlist=[tuple(item) for item in settings.SIGNOFF_MSGPACK_ALLOWLIST],
    )
