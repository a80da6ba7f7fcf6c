"""The one private LangGraph name the saver touches, kept here alone."""

from __future__ import annotations


def derive_graph_allowlists() -> None:
    """Have LangGraph hand every compiled graph's schema types to its saver.

    DjangoSaver's msgpack is strict, but LangGraph collects a graph's types (state, input,
    output, context and node schemas, channel types) and passes them to
    `checkpointer.with_allowlist` only in its own strict mode; in its default mode a graph
    with a dataclass or Pydantic model in its state reads it back as a dict. Turning on
    just this derivation leaves serializers as they are: a permissive saver's
    `with_allowlist` returns it unchanged, and no type outside the schemas is allowed.

    Why a private name: langgraph 1.2 has no public switch for it. `StateGraph.compile`,
    `entrypoint` and `Pregel` read the module global `langgraph._internal._serde.
    STRICT_MSGPACK_ENABLED`, copied at import from the (also private)
    `langgraph.checkpoint.serde._msgpack`; the public `JsonPlusSerializer(allowed_msgpack_
    modules=...)` and `with_msgpack_allowlist` set a serializer's allowlist, not whether
    LangGraph derives one from the graph. LANGGRAPH_STRICT_MSGPACK would do it too, but only
    if set before langgraph is first imported, and it also makes every default serializer
    strict.
    """
    from langgraph._internal import _serde

    flags = vars(_serde)
    if not isinstance(flags.get("STRICT_MSGPACK_ENABLED"), bool):
        raise ImportError(
            "langgraph._internal._serde.STRICT_MSGPACK_ENABLED is gone: find how this langgraph "
            "passes a graph's schema types to its checkpointer"
        )
    flags["STRICT_MSGPACK_ENABLED"] = True
