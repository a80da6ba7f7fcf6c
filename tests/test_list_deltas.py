"""The list-delta byte surgery, without a database: msgpack array headers, delta encoding,
chain assembly and the rows a chain keeps alive."""

from __future__ import annotations

import ormsgpack
import pytest

from workflows.checkpointer.list_deltas import (
    MAX_CHAIN_ROWS,
    BrokenDeltaChain,
    ListState,
    Tail,
    TailCache,
    array_header,
    array_split,
    assemble,
    encode,
    needed_versions,
)


def packed(items: list[object]) -> bytes:
    return ormsgpack.packb(items)


@pytest.mark.parametrize(
    ("count", "header"),
    [
        (0, b"\x90"),
        (15, b"\x9f"),
        (16, b"\xdc\x00\x10"),
        (65535, b"\xdc\xff\xff"),
        (65536, b"\xdd\x00\x01\x00\x00"),
    ],
)
def test_the_header_is_msgpacks_own_for_each_size_class(count: int, header: bytes):
    assert array_header(count) == header
    assert packed([None] * count)[: len(header)] == header


@pytest.mark.parametrize("count", [0, 1, 15, 16, 300, 65536])
def test_split_gives_the_count_and_the_items_bytes_of_any_array(count: int):
    items = list(range(count))
    data = packed(items)

    found = array_split(data)

    assert found is not None
    assert found[0] == count
    assert array_header(count) + found[1] == data


@pytest.mark.parametrize("data", [b"", packed({"a": 1}), packed("text"), packed(7)])
def test_split_refuses_what_is_not_an_array(data: bytes):
    assert array_split(data) is None


def root(version: str, items: list[object]) -> ListState:
    encoded = encode(version, packed(items), None)
    assert encoded is not None
    return encoded.state


def test_a_first_version_is_a_full_copy_and_its_own_root():
    encoded = encode("v1", packed(["a", "b"]), None)

    assert encoded is not None
    assert (encoded.data, encoded.base_version, encoded.root_version) == (packed(["a", "b"]), None, None)
    assert (encoded.state.root_version, encoded.state.root_count, encoded.state.chain_rows) == ("v1", 2, 0)


def test_an_appended_list_is_stored_as_an_array_of_the_new_items():
    base = root("v1", ["a", "b"])

    encoded = encode("v2", packed(["a", "b", "c"]), base)

    assert encoded is not None
    assert encoded.data == b"\x91" + packed("c")
    assert ormsgpack.unpackb(encoded.data) == ["c"]
    assert (encoded.base_version, encoded.root_version) == ("v1", "v1")
    assert (encoded.state.count, encoded.state.chain_items, encoded.state.chain_rows) == (3, 1, 1)


@pytest.mark.parametrize(
    "items",
    [
        ["a", "B", "c"],  # an item changed in place
        ["a"],  # shorter
        ["a", "b"],  # the same list
        ["x", "a", "b"],  # prepended
    ],
)
def test_anything_but_an_append_is_a_new_full_copy(items: list[object]):
    encoded = encode("v2", packed(items), root("v1", ["a", "b"]))

    assert encoded is not None
    assert (encoded.data, encoded.base_version, encoded.root_version) == (packed(items), None, None)
    assert encoded.state.root_version == "v2"


def test_a_chain_is_cut_once_it_holds_as_many_items_as_its_root():
    state = root("v0", ["r0", "r1"])
    kinds = []
    for step in range(1, 5):
        items = ["r0", "r1", *(f"n{i}" for i in range(step))]
        encoded = encode(f"v{step}", packed(items), state)
        assert encoded is not None
        kinds.append(encoded.base_version is not None)
        state = encoded.state

    # Two appended items fit a chain of a two-item root; the third starts a new root.
    assert kinds == [True, True, False, True]


def test_a_chain_is_cut_after_max_chain_rows_rows():
    state = root("v0", [f"r{i}" for i in range(2 * MAX_CHAIN_ROWS)])
    body = state.body
    state = ListState("v-last", state.count, body, "v0", state.root_count, MAX_CHAIN_ROWS - 1, MAX_CHAIN_ROWS)

    encoded = encode("v-next", array_header(state.count + 1) + body + packed("more"), state)

    assert encoded is not None
    assert encoded.base_version is None


def test_a_value_that_is_not_an_array_is_not_encoded():
    assert encode("v1", packed({"not": "a list"}), None) is None


def test_assemble_concatenates_the_chain_from_its_root():
    stored = {"v1": ["a", "b"], "v2": ["c"], "v3": ["d", "e"]}
    bases = {"v1": None, "v2": "v1", "v3": "v2"}

    assert assemble("v3", bases, stored.__getitem__, describe=str) == ["a", "b", "c", "d", "e"]
    assert assemble("v2", bases, stored.__getitem__, describe=str) == ["a", "b", "c"]


def test_assemble_of_encoded_rows_reads_back_the_list():
    items: list[object] = []
    state = None
    stored, bases = {}, {}
    for step in range(40):
        items = [*items, {"step": step}]
        encoded = encode(f"v{step:02}", packed(items), state)
        assert encoded is not None
        stored[f"v{step:02}"] = ormsgpack.unpackb(encoded.data)
        bases[f"v{step:02}"] = encoded.base_version
        state = encoded.state

    for step in range(40):
        expected = [{"step": i} for i in range(step + 1)]
        assert assemble(f"v{step:02}", bases, stored.__getitem__, describe=str) == expected


def test_a_missing_link_breaks_the_chain_with_the_versions_named():
    bases = {"v3": "v2", "v2": "v1"}

    with pytest.raises(BrokenDeltaChain, match="v3 needs v1"):
        assemble("v3", bases, lambda _: [], describe=lambda wanted, missing: f"{wanted} needs {missing}")


def test_needed_versions_keeps_every_row_of_a_needed_chain_and_nothing_else():
    bases = {"r": None, "d1": "r", "d2": "d1", "other": None, "d3": "other"}

    assert needed_versions({"d2"}, bases) == {"d2", "d1", "r"}
    assert needed_versions({"other"}, bases) == {"other"}
    assert needed_versions({"gone"}, bases) == {"gone"}


def test_the_tail_cache_offers_the_parents_lists_only_to_its_child():
    cache = TailCache(size=2)
    state = root("v1", ["a"])
    cache.set(("t", ""), Tail("c1", {"items": state}))

    assert cache.parent_lists(("t", ""), "c1") == {"items": state}
    assert cache.parent_lists(("t", ""), "c0") == {}
    cache.set(("u", ""), Tail("c1", {"items": state}))
    cache.set(("w", ""), Tail("c1", {"items": state}))
    assert cache.parent_lists(("t", ""), "c1") == {}  # the least recently used went first
    cache.forget(["u"])
    assert cache.parent_lists(("u", ""), "c1") == {}
    assert cache.parent_lists(("w", ""), "c1") == {"items": state}
