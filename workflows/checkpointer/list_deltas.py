"""Lists stored as deltas: the msgpack bytes of a list that grew by appending.

A list value whose encoding starts with the bytes of the version its checkpoint's parent
stored is kept as just the appended items (a msgpack array of them) plus the version it
extends; the first version of a chain (its root) is a full copy. A new full copy is written
whenever the chain holds as many items as its root, or has MAX_CHAIN_ROWS rows, so reading
a version concatenates at most that many rows, and storage stays linear in the items.

Pure functions over bytes and small records; no database, no serializer. The one piece of
state, `TailCache`, only remembers what the last put stored so the next can extend it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

# A delta chain is cut (a full copy written) after this many rows even if the list
# has not doubled, so one read never concatenates more rows than this.
MAX_CHAIN_ROWS = 1000


class BrokenDeltaChain(RuntimeError):
    """A stored list extends a version whose row is gone (deleted behind the saver's back)."""


def array_header(count: int) -> bytes:
    """The msgpack header of an array of `count` items (fixarray, array 16 or array 32)."""
    if count < 16:
        return bytes([0x90 | count])
    if count < 1 << 16:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def array_split(data: bytes) -> tuple[int, bytes] | None:
    """(item count, encoded items) of a msgpack array, or None if `data` is not one."""
    if not data:
        return None
    first = data[0]
    if 0x90 <= first <= 0x9F:
        return first & 0x0F, data[1:]
    if first == 0xDC:
        return int.from_bytes(data[1:3], "big"), data[3:]
    if first == 0xDD:
        return int.from_bytes(data[1:5], "big"), data[5:]
    return None


@dataclass(frozen=True, slots=True)
class ListState:
    """What the saver remembers of the last stored version of a list channel."""

    version: str
    count: int
    body: bytes  # the msgpack encoding of the items, to prove a new value extends it
    root_version: str
    root_count: int
    chain_items: int
    chain_rows: int


@dataclass(frozen=True, slots=True)
class Encoded:
    """How to store one version of a list: `data` is the whole msgpack array (a root) or
    an array of the appended items (a delta of `base_version`, in the chain of `root_version`)."""

    data: bytes
    base_version: str | None
    root_version: str | None
    state: ListState


def encode(version: str, plain: bytes, base: ListState | None) -> Encoded | None:
    """The row for `plain` (a list's msgpack encoding) at `version`, as a delta of `base`
    when it extends it; None if `plain` is not a msgpack array."""
    split = array_split(plain)
    if split is None:
        return None
    count, body = split
    # A byte-level prefix check, not ==: it also catches items mutated in place.
    if base is not None and count > base.count and body.startswith(base.body):
        chain_items = base.chain_items + count - base.count
        chain_rows = base.chain_rows + 1
        if chain_items <= base.root_count and chain_rows <= MAX_CHAIN_ROWS:
            delta = array_header(count - base.count) + body[len(base.body) :]
            state = ListState(
                version, count, body, base.root_version, base.root_count, chain_items, chain_rows
            )
            return Encoded(delta, base.version, base.root_version, state)
    return Encoded(plain, None, None, ListState(version, count, body, version, count, 0, 0))


def assemble[Value](
    version: str,
    bases: Mapping[str, str | None],
    load: Callable[[str], Sequence[Value]],
    *,
    describe: Callable[[str, str], str],
) -> list[Value]:
    """The items of `version`: its chain's decoded rows (`load(version)`) concatenated from
    the root. `bases` maps each stored version of the channel to the version it extends
    (None for a root); a version missing from it breaks the chain."""
    parts = []
    cursor: str | None = version
    while cursor is not None:
        if cursor not in bases:
            raise BrokenDeltaChain(describe(version, cursor))
        parts.append(load(cursor))
        cursor = bases[cursor]
    return [item for part in reversed(parts) for item in part]


def needed_versions[Key](needed: Iterable[Key], bases: Mapping[Key, Key | None]) -> set[Key]:
    """The stored rows a set of needed rows depends on: each, and every row of its chain down
    to the root. `bases` maps each stored row to the row it extends (None for a root); a
    base that is not stored is still counted needed (there is nothing to delete)."""
    keep = set(needed)
    pending = [key for key in keep if key in bases]
    while pending:
        base = bases[pending.pop()]
        if base is not None and base not in keep:
            keep.add(base)
            if base in bases:
                pending.append(base)
    return keep


@dataclass(frozen=True, slots=True)
class Tail:
    checkpoint_id: str
    lists: dict[str, ListState]


class TailCache:
    """Per (thread, namespace): the list channels of the checkpoint last put.

    Only a put whose parent is that checkpoint can store deltas; anything else
    (another process, a fork, a resume after a crash) stores full copies, so the
    cache only ever saves space and never decides correctness.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.lock = threading.Lock()
        self.items: OrderedDict[tuple[str, str], Tail] = OrderedDict()

    def parent_lists(self, key: tuple[str, str], parent_id: str | None) -> dict[str, ListState]:
        """The list states `parent_id` stored, if it is the last checkpoint put here."""
        with self.lock:
            tail = self.items.get(key)
            if tail is None:
                return {}
            self.items.move_to_end(key)
        return tail.lists if tail.checkpoint_id == parent_id else {}

    def set(self, key: tuple[str, str], tail: Tail) -> None:
        with self.lock:
            self.items[key] = tail
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)

    def forget(self, thread_ids: Iterable[str] | None = None) -> None:
        with self.lock:
            if thread_ids is None:
                self.items.clear()
                return
            doomed = set(thread_ids)
            for key in [k for k in self.items if k[0] in doomed]:
                del self.items[key]
