"""Model fields whose values are encrypted at rest when SIGNOFF_ENCRYPTION_KEY is set.

The checkpoint tables are sealed by the serializer (`workflows.serde`); the same values
also sit in the app's own rows (a thread's input, a run's command, a review's payload, a
decision's edits, an audit event's data). These fields seal those copies with the same key:
AES-GCM (authenticated; `cryptography`, whose cipher objects are reusable: pycryptodome's EAX,
which the checkpoints use, costs about a millisecond per value to set up, far too much for
an audit export of 100,000 rows) with a fresh random nonce per value, and the table and column
as associated data, so a ciphertext copied into another column does not open there.

In the database a value is text: JSON (or the plain text) as-is without a key, or
`sealed:v1:` + base64url(nonce | ciphertext | tag) with one. JSON text never starts with
"s", so the two cannot be confused. In Python the field holds what a `JSONField` (or a
`TextField`) holds, so code keeps reading `thread.input` as a dict.

With a key set, a row stored in plaintext (written before the key was set, or behind the
app's back) is refused, as a checkpoint row is; audit events, which cannot be rewritten and
whose hash chain already authenticates them, are read as they were stored
(`plaintext_ok=True`). A sealed row without the key, or with another key, is refused.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Lookup, Transform

from workflows.serde import PlaintextRefused as CheckpointPlaintextRefused

TAG = "sealed:v1:"
# AES-GCM's 96-bit nonce, drawn at random for each value: see docs/operations.md for how many
# values one key may seal.
_NONCE = 12


class SealError(ValueError):
    """A stored value that cannot be opened as it is; the message names the column."""


class PlaintextRefused(SealError, CheckpointPlaintextRefused):
    """A value stored without encryption although SIGNOFF_ENCRYPTION_KEY is set."""


class SealedWithoutKey(SealError):
    """A value stored encrypted while no SIGNOFF_ENCRYPTION_KEY is set."""


class SealBroken(SealError):
    """A ciphertext that does not open with this key here: another key, another column, or altered."""


def current_key() -> bytes | None:
    key: bytes | None = settings.SIGNOFF_ENCRYPTION_KEY
    return key


@functools.lru_cache(maxsize=4)
def _cipher(key: bytes) -> AESGCM:
    return AESGCM(key)


def seal(text: str, *, key: bytes, context: str) -> str:
    nonce = os.urandom(_NONCE)
    body = _cipher(key).encrypt(nonce, text.encode(), context.encode())
    return TAG + base64.urlsafe_b64encode(nonce + body).decode()


def unseal(stored: str, *, key: bytes | None, context: str) -> str:
    if key is None:
        raise SealedWithoutKey(
            f"{context} holds an encrypted value but SIGNOFF_ENCRYPTION_KEY is not set; set the key it "
            "was written with"
        )
    try:
        raw = base64.urlsafe_b64decode(stored[len(TAG) :])
        return _cipher(key).decrypt(raw[:_NONCE], raw[_NONCE:], context.encode()).decode()
    except (binascii.Error, ValueError, InvalidTag) as exc:
        raise SealBroken(
            f"{context} holds a value that does not open with SIGNOFF_ENCRYPTION_KEY: it was written "
            "with another key, for another column, or altered"
        ) from exc


class _Sealed:
    """What the sealed fields share: text in the database, sealed with a key set."""

    plaintext_ok: bool
    model: type[models.Model]
    column: str

    def __init__(self, *args: Any, plaintext_ok: bool = False, **kwargs: Any) -> None:
        self.plaintext_ok = plaintext_ok
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> Any:
        name, path, args, kwargs = super().deconstruct()  # type: ignore[misc]
        if self.plaintext_ok:
            kwargs["plaintext_ok"] = True
        return name, path, args, kwargs

    @property
    def context(self) -> str:
        return f"{self.model._meta.db_table}.{self.column}"

    def get_internal_type(self) -> str:
        # A text column on every database: jsonb would refuse a ciphertext, and SQLite's
        # JSONField adds a JSON_VALID check.
        return "TextField"

    def _to_db(self, text: str) -> str:
        key = current_key()
        return text if key is None else seal(text, key=key, context=self.context)

    def _from_db(self, stored: str) -> str:
        if stored.startswith(TAG):
            return unseal(stored, key=current_key(), context=self.context)
        if current_key() is not None and not self.plaintext_ok:
            raise PlaintextRefused(
                f"refusing to read {self.context} stored without encryption while SIGNOFF_ENCRYPTION_KEY "
                "is set; it was written before the key was set or behind the app's back"
            )
        return stored

    def get_transform(self, name: str) -> type[Transform] | None:
        # A key lookup (data__review=...) would compare a ciphertext: refuse it as unsupported.
        return None

    def get_lookup(self, lookup_name: str) -> type[Lookup[Any]] | None:
        if lookup_name != "isnull":
            return None
        return models.Field.get_lookup(self, lookup_name)  # type: ignore[arg-type]


# ignore[misc]: the mixin narrows get_transform (no key transforms) and declares `column` as set.
class SealedJSONField(_Sealed, models.JSONField):  # type: ignore[misc]
    """A JSONField stored as text, sealed when SIGNOFF_ENCRYPTION_KEY is set.

    Only `isnull` can be queried: the database sees ciphertext, so filter on other columns.
    """

    def from_db_value(self, value: Any, expression: Any, connection: BaseDatabaseWrapper) -> Any:
        if value is None:
            return None
        return json.loads(self._from_db(value), cls=self.decoder)

    def get_db_prep_value(self, value: Any, connection: BaseDatabaseWrapper, prepared: bool = False) -> Any:
        if value is None:
            return None
        # Strict JSON: NaN and Infinity are no JSON, and jsonb refused them before.
        text = json.dumps(value, cls=self.encoder, ensure_ascii=False, allow_nan=False)
        return self._to_db(text)


class SealedTextField(_Sealed, models.TextField[str, str]):  # type: ignore[misc]
    """A TextField sealed when SIGNOFF_ENCRYPTION_KEY is set (an empty text stays empty)."""

    def from_db_value(self, value: Any, expression: Any, connection: BaseDatabaseWrapper) -> Any:
        if value is None or value == "":
            return value
        return self._from_db(value)

    def get_db_prep_value(self, value: Any, connection: BaseDatabaseWrapper, prepared: bool = False) -> Any:
        value = super().get_db_prep_value(value, connection, prepared)
        if value is None or value == "" or hasattr(value, "as_sql"):
            return value
        return self._to_db(str(value))
