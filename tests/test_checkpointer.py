"""DjangoSaver's own promises beyond the conformance suite: storage, transactions,
connections, query counts and safe serialization."""

from __future__ import annotations

import base64
import dataclasses
import gc
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.checkpoint.base.id import uuid6

from tests.fake_workflows import config_for, make_expense_graph, make_growing_graph, make_log_graph
from workflows.checkpointer import BrokenDeltaChain, DjangoSaver
from workflows.checkpointer import connections as write_connections
from workflows.models import Checkpoint, CheckpointBlob, CheckpointWrite
from workflows.serde import PlaintextRefused, make_serde

pytestmark = pytest.mark.django_db(transaction=True)

KEY = base64.urlsafe_b64decode(base64.urlsafe_b64encode(b"k" * 32))
MARKER = "TOP-SECRET-MARKER"


@dataclasses.dataclass
class Secret:
    text: str


def new_thread() -> str:
    return str(uuid.uuid4())


def put_checkpoint(
    saver: DjangoSaver,
    thread_id: str,
    values: dict[str, Any],
    new_versions: dict[str, str],
    versions: dict[str, str],
    parent: str | None = None,
) -> dict[str, Any]:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if parent:
        configurable["checkpoint_id"] = parent
    checkpoint = {
        "v": 4,
        "id": str(uuid6(clock_seq=-1)),
        "ts": datetime.now(UTC).isoformat(),
        "channel_values": values,
        "channel_versions": versions,
        "versions_seen": {},
        "updated_channels": list(new_versions),
    }
    return saver.put({"configurable": configurable}, checkpoint, {"source": "loop", "step": 0}, new_versions)


def values_at(saver: DjangoSaver, config: dict[str, Any]) -> dict[str, Any]:
    found = saver.get_tuple(config)
    assert isinstance(found, CheckpointTuple)
    return found.checkpoint["channel_values"]


def stored_bytes(thread_id: str) -> int:
    total = sum(
        len(bytes(blob or b""))
        for blob in CheckpointBlob.objects.filter(thread_id=thread_id).values_list("blob", flat=True)
    )
    total += sum(
        len(bytes(v)) for v in Checkpoint.objects.filter(thread_id=thread_id).values_list("values", flat=True)
    )
    return total


# -- versions ------------------------------------------------------------------


def test_versions_sort_as_numbers_and_never_repeat(saver: DjangoSaver):
    versions = [saver.get_next_version(None)]
    for _ in range(20):
        versions.append(saver.get_next_version(versions[-1]))

    assert versions == sorted(versions)
    assert versions[0].startswith("0" * 31 + "1.")
    assert int(versions[-1].split(".")[0]) == 21
    assert len({saver.get_next_version(versions[3]) for _ in range(50)}) == 50


# -- transactions and connections ------------------------------------------------


def test_update_state_joins_the_callers_transaction(saver: DjangoSaver):
    graph = make_expense_graph(saver, Counter())
    config = config_for(new_thread())
    graph.invoke({"amount": 5.0}, config, durability="sync")
    before = Checkpoint.objects.filter(thread_id=config["configurable"]["thread_id"]).count()

    def decide_then_fail() -> None:
        with transaction.atomic():
            graph.update_state(config, {"approved": True})
            raise RuntimeError("decision refused")

    with pytest.raises(RuntimeError, match="decision refused"):
        decide_then_fail()

    assert Checkpoint.objects.filter(thread_id=config["configurable"]["thread_id"]).count() == before
    assert graph.get_state(config).values["approved"] is False


@pytest.fixture
def pool() -> Any:
    if connection.pool is None:
        pytest.skip("this test checks the pooled configuration (DATABASE_POOL_SIZE > 0)")
    return connection.pool


def pooled_connections_checked_out(pool: Any) -> int:
    gc.collect()
    stats = pool.get_stats()
    return stats["pool_size"] - stats["pool_available"]


# The saver's own write connections, kept for the life of the process.
WRITE_CONNECTIONS = 2


@pytest.mark.postgres
def test_checkpoint_writes_from_langgraph_threads_leak_no_connections(saver: DjangoSaver, pool: Any):
    graph = make_log_graph(saver, Counter())
    # More invocations than the pool holds: a connection leaked per invocation would
    # exhaust it and the next checkpoint write would time out.
    for _ in range(pool.max_size * 3):
        graph.invoke({"log": []}, config_for(new_thread()), durability="sync")

    main_thread_connection = 1 if connection.connection is not None else 0
    assert pooled_connections_checked_out(pool) <= main_thread_connection + WRITE_CONNECTIONS


@pytest.mark.postgres
def test_reads_from_short_lived_threads_give_their_connections_back(saver: DjangoSaver, pool: Any):
    config = put_checkpoint(saver, new_thread(), {}, {}, {})
    found: list[CheckpointTuple | None] = []
    # Reads run on the calling thread's own connection; a thread that ends without
    # handing it back keeps it from the pool for good, so past the pool's size the
    # next reader would wait out the pool's timeout and fail.
    readers = pool.max_size + 2
    for _ in range(readers):
        reader = threading.Thread(target=lambda: found.append(saver.get_tuple(config)))
        reader.start()
        reader.join()

    assert all(isinstance(item, CheckpointTuple) for item in found)
    assert len(found) == readers
    main_thread_connection = 1 if connection.connection is not None else 0
    assert pooled_connections_checked_out(pool) <= main_thread_connection + WRITE_CONNECTIONS


# -- query counts -----------------------------------------------------------------


def test_get_tuple_costs_the_same_few_queries_however_many_channels(saver: DjangoSaver):
    counts = []
    for width in (3, 40):
        thread_id = new_thread()
        values = {f"ch{i}": {"payload": i} for i in range(width)}
        versions = {name: saver.get_next_version(None) for name in values}
        config = put_checkpoint(saver, thread_id, values, versions, versions)
        saver.put_writes(config, [(f"ch{i}", i) for i in range(width)], task_id="task-1")
        with CaptureQueriesContext(connection) as queries:
            assert values_at(saver, config) == values
        counts.append(len(queries))

    assert counts[0] == counts[1] <= 4


def test_listing_costs_no_query_per_checkpoint(saver: DjangoSaver):
    counts = []
    for steps in (5, 60):
        graph = make_growing_graph(saver)
        config = config_for(new_thread())
        graph.invoke({"items": [], "target": steps}, {**config, "recursion_limit": 200}, durability="sync")
        with CaptureQueriesContext(connection) as queries:
            history = list(saver.list(config))
        assert len(history) == steps + 2
        counts.append(len(queries))

    assert counts[0] == counts[1] <= 5


# -- appended lists ------------------------------------------------------------------


def test_an_accumulating_list_is_stored_as_deltas_in_linear_space(saver: DjangoSaver):
    graph = make_growing_graph(saver)
    config = config_for(new_thread())
    thread_id = config["configurable"]["thread_id"]
    sizes = {}
    for target in (100, 200, 400):
        graph.invoke({"items": [], "target": target}, {**config, "recursion_limit": 1000}, durability="sync")
        sizes[target] = stored_bytes(thread_id)

    rows = CheckpointBlob.objects.filter(thread_id=thread_id, channel="items")
    assert rows.filter(base_version__isnull=False).count() > 0.9 * rows.count()
    # Linear: the second 200 steps cost about what the first 200 did, not 3x.
    assert sizes[400] - sizes[200] < 1.6 * sizes[200]
    # Each invoke grows the same thread on to its target: 400 steps in all.
    assert graph.get_state(config).values["items"] == [f"item-{i:05d}-" + "x" * 40 for i in range(400)]


def test_a_list_item_changed_in_place_is_not_lost_to_a_delta(saver: DjangoSaver):
    thread_id = new_thread()
    v1, v2 = saver.get_next_version(None), saver.get_next_version("1")
    first = put_checkpoint(saver, thread_id, {"items": [{"n": 1}, {"n": 2}]}, {"items": v1}, {"items": v1})
    second = put_checkpoint(
        saver,
        thread_id,
        {"items": [{"n": 100}, {"n": 2}, {"n": 3}]},
        {"items": v2},
        {"items": v2},
        parent=first["configurable"]["checkpoint_id"],
    )

    assert values_at(saver, second)["items"] == [{"n": 100}, {"n": 2}, {"n": 3}]
    assert values_at(saver, first)["items"] == [{"n": 1}, {"n": 2}]


def test_each_fork_of_a_list_reads_back_its_own_items(saver: DjangoSaver):
    thread_id = new_thread()
    base_items = [f"item {i}" for i in range(20)]
    v1 = saver.get_next_version(None)
    root = put_checkpoint(saver, thread_id, {"items": base_items}, {"items": v1}, {"items": v1})
    parent = root["configurable"]["checkpoint_id"]
    left_version, right_version = saver.get_next_version(v1), saver.get_next_version(v1)
    left = put_checkpoint(
        saver,
        thread_id,
        {"items": [*base_items, "left"]},
        {"items": left_version},
        {"items": left_version},
        parent,
    )
    right = put_checkpoint(
        saver,
        thread_id,
        {"items": [*base_items, "right"]},
        {"items": right_version},
        {"items": right_version},
        parent,
    )

    assert values_at(saver, left)["items"] == [*base_items, "left"]
    assert values_at(saver, right)["items"] == [*base_items, "right"]
    assert values_at(saver, root)["items"] == base_items


def test_pruning_to_the_latest_keeps_the_heads_delta_chain(saver: DjangoSaver):
    graph = make_growing_graph(saver)
    config = config_for(new_thread())
    thread_id = config["configurable"]["thread_id"]
    graph.invoke({"items": [], "target": 150}, {**config, "recursion_limit": 400}, durability="sync")
    expected = graph.get_state(config).values["items"]
    rows_before = CheckpointBlob.objects.filter(thread_id=thread_id).count()

    saver.prune([thread_id], strategy="keep_latest")

    assert Checkpoint.objects.filter(thread_id=thread_id).count() == 1
    assert CheckpointBlob.objects.filter(thread_id=thread_id).count() < rows_before
    assert DjangoSaver().get_tuple(config).checkpoint["channel_values"]["items"] == expected
    # The thread carries on from the pruned head.
    graph.invoke({"items": [], "target": 160}, {**config, "recursion_limit": 400}, durability="sync")
    assert graph.get_state(config).values["items"][:150] == expected


def test_copying_a_thread_copies_its_delta_chains(saver: DjangoSaver):
    graph = make_growing_graph(saver)
    config = config_for(new_thread())
    graph.invoke({"items": [], "target": 70}, {**config, "recursion_limit": 200}, durability="sync")
    target = new_thread()

    saver.copy_thread(config["configurable"]["thread_id"], target)

    assert graph.get_state(config_for(target)).values == graph.get_state(config).values
    assert len(list(saver.list(config_for(target)))) == len(list(saver.list(config)))


# -- serialization ------------------------------------------------------------------


def test_encrypted_checkpoints_round_trip_and_store_no_plaintext():
    saver = DjangoSaver(serde=make_serde(key=KEY))
    graph = make_growing_graph(saver)
    config = config_for(new_thread())
    thread_id = config["configurable"]["thread_id"]
    graph.invoke({"items": [MARKER], "target": 40}, {**config, "recursion_limit": 100}, durability="sync")
    graph.update_state(config, {"items": [MARKER + " edit"]})

    assert graph.get_state(config).values["items"][0] == MARKER
    assert graph.get_state(config).values["items"][-1] == MARKER + " edit"
    stored = [
        *CheckpointBlob.objects.filter(thread_id=thread_id).values_list("type", "blob"),
        *CheckpointWrite.objects.filter(thread_id=thread_id).values_list("type", "blob"),
        *Checkpoint.objects.filter(thread_id=thread_id).values_list("values_type", "values"),
    ]
    assert stored
    assert all(type_.endswith("+aes") for type_, _ in stored)
    assert not any(MARKER.encode() in bytes(blob) for _, blob in stored)
    assert not any(MARKER in str(doc) for doc in Checkpoint.objects.values_list("checkpoint", "metadata"))


def test_a_row_written_without_encryption_is_refused_once_a_key_is_set():
    plain = DjangoSaver(serde=make_serde(key=None))
    graph = make_expense_graph(plain, Counter())
    config = config_for(new_thread())
    graph.invoke({"amount": 1.0}, config, durability="sync")

    sealed = DjangoSaver(serde=make_serde(key=KEY))
    with pytest.raises(PlaintextRefused, match="without encryption"):
        sealed.get_tuple(config)
    # A saver narrowed by a graph's allowlist still refuses.
    with pytest.raises(PlaintextRefused):
        sealed.with_allowlist({("tests.test_checkpointer", "Secret")}).get_tuple(config)


def test_a_type_outside_the_allowlist_is_not_revived(saver: DjangoSaver):
    thread_id = new_thread()
    version = saver.get_next_version(None)
    config = put_checkpoint(
        saver, thread_id, {"secret": Secret("hi")}, {"secret": version}, {"secret": version}
    )

    revived = values_at(saver, config)["secret"]
    assert not isinstance(revived, Secret)

    allowed = DjangoSaver(serde=make_serde(key=None, allowlist=[Secret]))
    assert values_at(allowed, config)["secret"] == Secret("hi")


def test_a_pickled_row_is_refused_not_executed(saver: DjangoSaver):
    thread_id = new_thread()
    version = saver.get_next_version(None)
    config = put_checkpoint(saver, thread_id, {"data": {"a": 1}}, {"data": version}, {"data": version})
    CheckpointBlob.objects.filter(thread_id=thread_id).update(
        type="pickle", blob=b"cos\nsystem\n(S'true'\ntR."
    )

    with pytest.raises(NotImplementedError, match="pickle"):
        saver.get_tuple(config)


# -- bad input and damage ---------------------------------------------------------------


def test_metadata_filter_keys_cannot_inject_sql(saver: DjangoSaver):
    thread_id = new_thread()
    put_checkpoint(saver, thread_id, {}, {}, {})
    config = config_for(thread_id)

    hostile = {'source") OR 1=1 --': "x", "a' OR '1'='1": "y"}

    assert list(saver.list(config, filter=hostile)) == []
    assert len(list(saver.list(config, filter={"source": "loop"}))) == 1


def test_put_writes_without_a_checkpoint_id_is_refused(saver: DjangoSaver):
    with pytest.raises(ValueError, match="checkpoint_id"):
        saver.put_writes(config_for(new_thread(), checkpoint_ns=""), [("x", 1)], task_id="t")


def test_an_unknown_prune_strategy_is_refused_and_deletes_nothing(saver: DjangoSaver):
    thread_id = new_thread()
    put_checkpoint(saver, thread_id, {}, {}, {})

    with pytest.raises(ValueError, match="keep_latest"):
        saver.prune([thread_id], strategy="everything")
    assert Checkpoint.objects.filter(thread_id=thread_id).count() == 1


def test_a_wrong_key_cannot_read_encrypted_checkpoints():
    writer = DjangoSaver(serde=make_serde(key=KEY))
    thread_id = new_thread()
    version = writer.get_next_version(None)
    config = put_checkpoint(
        writer, thread_id, {"data": {"secret": MARKER}}, {"data": version}, {"data": version}
    )

    reader = DjangoSaver(serde=make_serde(key=b"w" * 32))
    with pytest.raises(ValueError, match="MAC check failed"):
        reader.get_tuple(config)


def test_a_list_whose_base_row_was_deleted_fails_with_a_clear_error(saver: DjangoSaver):
    graph = make_growing_graph(saver)
    config = config_for(new_thread())
    graph.invoke({"items": [], "target": 40}, {**config, "recursion_limit": 100}, durability="sync")
    head = saver.get_tuple(config)
    assert head is not None
    version = str(head.checkpoint["channel_versions"]["items"])
    base = CheckpointBlob.objects.get(
        thread_id=config["configurable"]["thread_id"], channel="items", version=version
    )
    assert base.base_version is not None
    CheckpointBlob.objects.filter(version=base.base_version).delete()

    with pytest.raises(BrokenDeltaChain, match="missing"):
        saver.get_tuple(config)


def test_many_graphs_writing_at_once_all_read_back(saver: DjangoSaver):
    graph = make_growing_graph(saver)
    threads = [new_thread() for _ in range(16)]

    def grow(thread_id: str) -> list[Any]:
        config = config_for(thread_id)
        graph.invoke({"items": [], "target": 25}, {**config, "recursion_limit": 100}, durability="sync")
        return DjangoSaver().get_tuple(config).checkpoint["channel_values"]["items"]

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(grow, threads))

    expected = [f"item-{i:05d}-" + "x" * 40 for i in range(25)]
    assert results == [expected] * len(threads)


def test_a_forked_process_opens_its_own_write_connections(monkeypatch: pytest.MonkeyPatch):
    parent = write_connections.writers("default")
    # Put the parent's connections back afterwards, so they are closed at the end.
    monkeypatch.setitem(write_connections._write_connections, "default", parent)
    monkeypatch.setattr(write_connections.os, "getpid", lambda: parent.pid + 1)

    child = write_connections.writers("default")

    assert child is not parent
    assert child.opened == []


# -- delta channel history --------------------------------------------------------------


def test_delta_channel_history_is_the_base_classs_walk_in_few_queries(saver: DjangoSaver):
    graph = make_growing_graph(saver)
    config = config_for(new_thread())
    graph.invoke({"items": [], "target": 12}, {**config, "recursion_limit": 100}, durability="sync")
    middle = list(saver.list(config))[6].config
    forked = graph.update_state(middle, {"items": ["forked"]})
    graph.invoke(None, {**forked, "recursion_limit": 100}, durability="sync")
    channels = ["items", "target", "never-written"]

    for item in saver.list(config):
        with CaptureQueriesContext(connection) as queries:
            ours = saver.get_delta_channel_history(config=item.config, channels=channels)
        walked = BaseCheckpointSaver.get_delta_channel_history(saver, config=item.config, channels=channels)
        assert ours == walked
        assert len(queries) <= 2
    assert saver.get_delta_channel_history(config=config, channels=channels) == (
        BaseCheckpointSaver.get_delta_channel_history(saver, config=config, channels=channels)
    )
    assert saver.get_delta_channel_history(config=config, channels=[]) == {}
