"""`DjangoSaver`: LangGraph checkpoints in the app's own database, through Django.

Why not LangGraph's own savers: they keep their own connections, tables and
migrations, outside Django's transactions and admin. This saver writes through
Django's connections: a write made while the calling thread is inside
`transaction.atomic()` (as `update_state` in a decision is) joins that transaction;
any other write (LangGraph calls `put` and `put_writes` from short-lived threads of
its own) borrows one of a few long-lived connections and commits at once. So never
invoke a graph inside a transaction: its background writes would queue behind it.

Storage follows the official savers' contract (see langgraph-checkpoint's
`BaseCheckpointSaver`): a checkpoint row per step, a blob row per channel version
(written only for `new_versions`), and pending writes keyed by task and index. Two
additions: small scalar values live in the checkpoint row (one serialized value,
encrypted like the rest), and a list that grew by appending is stored as just the
appended items, chained to the version it extends, with a full copy whenever the
list has doubled since the last one. That keeps an accumulating message list linear
in storage instead of quadratic, and bounds the chain a read must follow.

The modules, one concern each:
- saver: the BaseCheckpointSaver methods, each building arguments, running one
  statement and loading the result
- sql: column tuples, the INSERTs, and the one read statement both read paths run
- codec: LangGraph values to rows and back (inline scalars, blob rows, tuples)
- list_deltas: the msgpack bytes of appended lists, pure functions, and the tail cache
- connections: the borrowed write connections, thread-local reads, running statements
- fence: leases and the `Fence` a run's writes are checked by (Signoff's: workflows.leases)
- maintenance: delete, copy, prune, and collecting blobs no checkpoint needs
- allowlist: the one private LangGraph switch the saver turns on
"""

from workflows.checkpointer.allowlist import derive_graph_allowlists
from workflows.checkpointer.codec import UnreadableCheckpoint
from workflows.checkpointer.connections import close_write_connections
from workflows.checkpointer.fence import LEASE_KEY, Fence, Lease, LeaseLost, NoFence
from workflows.checkpointer.list_deltas import MAX_CHAIN_ROWS, BrokenDeltaChain
from workflows.checkpointer.saver import DjangoSaver

derive_graph_allowlists()

__all__ = [
    "LEASE_KEY",
    "MAX_CHAIN_ROWS",
    "BrokenDeltaChain",
    "DjangoSaver",
    "Fence",
    "Lease",
    "LeaseLost",
    "NoFence",
    "UnreadableCheckpoint",
    "close_write_connections",
]
