"""Encryption at rest (``encryption=Keyring(...)``): only ciphertext in the table, bound to its row.

Every body that can runs on both stores: the suite's `store` fixture gives the pool,
and `encrypted` makes a store with a keyring on it. The raw column is read with a
plain connection (`db`), never through the store.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from _support import Both, app_role, in_, new_token
from psycopg_pool import ConnectionPool
from test_cli import run

from sessionstore import AsyncStore, Store
from sessionstore._core import hash_token
from sessionstore.cleanup import NoCleanup
from sessionstore.cli import main
from sessionstore.crypto import Keyring
from sessionstore.metrics import Recorder

OLD, NEW, OTHER = Keyring.generate_key(), Keyring.generate_key(), Keyring.generate_key()
SECRET = b"user_id=42; role=admin; secret-plaintext-marker"


class Batches(Recorder):
    """Counts the combined statements a store runs, per operation."""

    def __init__(self) -> None:
        self.sizes: dict[str, list[int]] = {}

    def batch(self, operation: str, size: int) -> None:
        self.sizes.setdefault(operation, []).append(size)


def encrypted(store: Both, *keys: bytes, **options: Any) -> Both:
    """A store of the fixture's kind, on its pool, encrypting with `keys`."""
    ring = Keyring(*keys)
    if isinstance(store.store, AsyncStore):
        return Both(AsyncStore(store.store.pool, cleanup=NoCleanup(), encryption=ring, **options))
    return Both(Store(store.store.pool, cleanup=NoCleanup(), encryption=ring, **options))


def raw(db: psycopg.Connection[Any], key: str) -> bytes:
    """The data column of the row stored under `key`, as the database holds it."""
    row = db.execute("SELECT data FROM sessions WHERE token = %s", (key,)).fetchone()
    assert row is not None
    return bytes(row[0])


def crypto_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "sessionstore.crypto"]


def assert_no_secret_logged(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    for record in caplog.records:
        text = record.getMessage()
        assert not any(secret in text for secret in secrets), text


# Keys.


def test_bad_keys_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        Keyring()
    with pytest.raises(ValueError, match="key 2 is 31 bytes long; AES-256 keys are 32 bytes"):
        Keyring(NEW, NEW[:31])
    with pytest.raises(TypeError, match="key 1 must be bytes, not str"):
        Keyring("k" * 32)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key 1 must be bytes, not bytearray"):
        Keyring(bytearray(NEW))  # type: ignore[arg-type]
    assert len(Keyring(NEW, NEW)._ciphers) == 1  # the same key twice counts once
    assert len(Keyring.generate_key()) == 32
    assert Keyring.generate_key() != NEW


def test_no_key_in_repr_or_str() -> None:
    ring = Keyring(NEW, OLD)
    shown = repr(ring) + str(ring)
    for key in (NEW, OLD):
        for form in (repr(key), key.hex(), base64.urlsafe_b64encode(key).decode()):
            assert form not in shown
    assert "2 key(s)" in repr(ring)


async def test_a_store_takes_only_a_keyring(store: Both) -> None:
    kind = type(store.store)
    with pytest.raises(TypeError, match=r"encryption must be a sessionstore\.crypto\.Keyring, not"):
        kind(store.store.pool, cleanup=NoCleanup(), encryption=NEW)  # type: ignore[arg-type]


async def test_reencrypt_needs_encryption_and_a_good_batch_size(store: Both) -> None:
    with pytest.raises(ValueError, match="reencrypt needs a store made with encryption="):
        await store.reencrypt()
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        await encrypted(store, NEW).reencrypt(batch_size=0)


# What the table holds.


async def test_only_ciphertext_reaches_the_column(store: Both, db: psycopg.Connection[Any]) -> None:
    secure = encrypted(store, NEW)
    token = new_token()
    await secure.commit(token, SECRET, in_(60))
    first = raw(db, token)
    assert SECRET not in first
    assert b"secret-plaintext-marker" not in first
    assert first.startswith(Keyring(NEW).prefix)
    assert await secure.find(token) == SECRET
    await secure.commit(token, SECRET, in_(60))
    assert raw(db, token) != first  # a fresh nonce each write
    assert await secure.find(token) == SECRET
    await secure.commit(token, b"", in_(60))
    assert await secure.find(token) == b""  # empty stays empty, not missing
    # A store without the key reads the ciphertext as it is: never the plaintext.
    assert await store.find(token) == raw(db, token) != b""


@pytest.mark.parametrize("hashed", [False, True])
async def test_data_copied_into_another_row_reads_as_no_session(
    store: Both, db: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture, hashed: bool
) -> None:
    secure = encrypted(store, NEW, hash_tokens=hashed)
    victim, attacker = new_token(), new_token()
    await secure.commit(victim, SECRET, in_(60))
    await secure.commit(attacker, b"mine", in_(60))
    keys = {t: hash_token(t) if hashed else t for t in (victim, attacker)}
    db.execute(
        "UPDATE sessions SET data = (SELECT data FROM sessions WHERE token = %s) WHERE token = %s",
        (keys[victim], keys[attacker]),
    )
    caplog.clear()
    assert await secure.find(attacker) is None
    [warning] = crypto_warnings(caplog)
    assert warning.levelno == logging.WARNING
    assert "does not authenticate" in warning.getMessage()
    assert await secure.find(victim) == SECRET  # the original still reads
    assert_no_secret_logged(caplog, victim, attacker, *keys.values())


@pytest.mark.parametrize("offset", [0, 1, 7, 20, -1])
async def test_a_changed_byte_reads_as_no_session(
    store: Both, db: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture, offset: int
) -> None:
    """Format byte, key id, nonce, ciphertext, tag: each is checked."""
    secure = encrypted(store, NEW)
    token = new_token()
    await secure.commit(token, SECRET, in_(60))
    data = bytearray(raw(db, token))
    data[offset] ^= 0x01
    db.execute("UPDATE sessions SET data = %s WHERE token = %s", (bytes(data), token))
    caplog.clear()
    assert await secure.find(token) is None
    assert await secure.find_versioned(token) is None
    assert len(crypto_warnings(caplog)) == 2  # one per read of the row
    assert_no_secret_logged(caplog, token)


async def test_a_row_written_without_encryption_reads_as_no_session(
    store: Both, caplog: pytest.LogCaptureFixture
) -> None:
    token = new_token()
    await store.commit(token, SECRET, in_(60))
    caplog.clear()
    assert await encrypted(store, NEW).find(token) is None
    [warning] = crypto_warnings(caplog)
    assert "not in the encrypted format" in warning.getMessage()


async def test_max_data_size_is_on_the_plaintext(store: Both) -> None:
    secure = encrypted(store, NEW, max_data_size=100)
    token = new_token()
    await secure.commit(token, bytes(100), in_(60))  # its ciphertext is longer: accepted
    assert await secure.find(token) == bytes(100)
    with pytest.raises(ValueError, match="data is 101 bytes; this store accepts at most 100"):
        await secure.commit(token, bytes(101), in_(60))
    with pytest.raises(ValueError, match="at most 100"):
        await secure.update(token, memoryview(bytes(101)), in_(60))


# Keys leaving and rotating.


async def test_rows_under_a_key_not_in_the_ring_are_no_session_anywhere(
    store: Both, db: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    old = encrypted(store, OLD, owners=True)
    await old.create_table()  # the owner column
    gone, kept = new_token(), new_token()
    await old.commit(gone, SECRET, in_(60), owner="alice")
    new = encrypted(store, NEW, owners=True)
    await new.commit(kept, b"new", in_(60), owner="alice")
    caplog.clear()
    assert await new.find(gone) is None
    assert await new.find_versioned(gone) is None
    assert await new.all() == {kept: b"new"}
    assert await new.walk(batch_size=1) == {kept: b"new"}
    assert [(s.key, s.data) for s in await new.sessions_of("alice")] == [(kept, b"new")]
    warnings = crypto_warnings(caplog)
    assert len(warnings) == 5  # exactly one per read of the row
    assert all("not in the keyring" in w.getMessage() for w in warnings)
    assert_no_secret_logged(caplog, gone, kept)
    assert await new.exists(gone) is True  # the row is there; only its data is unreadable


async def test_a_ring_with_the_old_key_second_reads_old_rows_and_writes_new_ones(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    old_token, new_token_ = new_token(), new_token()
    await encrypted(store, OLD).commit(old_token, b"old", in_(60))
    rotating = encrypted(store, NEW, OLD)
    assert await rotating.find(old_token) == b"old"
    await rotating.commit(new_token_, b"new", in_(60))
    assert raw(db, new_token_).startswith(Keyring(NEW).prefix)
    assert raw(db, old_token).startswith(Keyring(OLD).prefix)  # reading rewrites nothing
    assert await encrypted(store, NEW).find(new_token_) == b"new"


@pytest.mark.parametrize(("owners", "hashed"), [(False, False), (True, True)])
async def test_reencrypt_rewrites_what_is_not_under_the_first_key(
    store: Both,
    db: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
    owners: bool,
    hashed: bool,
) -> None:
    options: dict[str, Any] = {"owners": owners, "hash_tokens": hashed}
    old = encrypted(store, OLD, **options)
    if owners:
        await old.create_table()
    tokens = [new_token() for _ in range(7)]
    for i, token in enumerate(tokens):
        await old.commit(token, b"session %d" % i, in_(60), owner="alice" if owners else None)
    expired, foreign, current = new_token(), new_token(), new_token()
    await old.commit(expired, b"expired", in_(-60))
    await encrypted(store, OTHER, **options).commit(foreign, b"foreign", in_(60))
    rotating = encrypted(store, NEW, OLD, **options)
    await rotating.commit(current, b"current", in_(60))
    before = raw(db, hash_token(current) if hashed else current)
    caplog.clear()
    assert await rotating.reencrypt(batch_size=3) == len(tokens)  # batches of 3, 3, 1, ...
    [warning] = crypto_warnings(caplog)  # the foreign row: left alone, not counted
    assert "not in the keyring" in warning.getMessage()
    assert raw(db, hash_token(current) if hashed else current) == before  # not rewritten
    assert await rotating.reencrypt() == 0
    new = encrypted(store, NEW, **options)
    caplog.clear()
    expected = {token: b"session %d" % i for i, token in enumerate(tokens)} | {current: b"current"}
    for token, data in expected.items():
        assert await new.find(token) == data
    assert crypto_warnings(caplog) == []
    assert len(await new.all()) == len(expected)
    assert len(crypto_warnings(caplog)) == 1  # the foreign row, left out
    if owners:
        assert len(await new.sessions_of("alice")) == len(tokens)  # owners kept
    assert raw(db, hash_token(expired) if hashed else expired).startswith(Keyring(OLD).prefix)


async def test_reencrypt_leaves_a_row_written_after_it_read_it(
    store: Both, db: psycopg.Connection[Any], sessionstore_dsn: str
) -> None:
    """The write wins: a rewrite only lands on the row version it read."""
    token = new_token()
    await encrypted(store, OLD).commit(token, b"old", in_(60))
    rotating = encrypted(store, NEW, OLD)
    with psycopg.connect(sessionstore_dsn) as writer:
        # A concurrent write (a touch, here) holds the row: reencrypt reads the old
        # version, then its UPDATE waits, sees a new xmin once the write commits, and
        # skips the row.
        writer.execute(
            "UPDATE sessions SET expiry = expiry + interval '1 minute' WHERE token = %s",
            (token,),
        )
        if isinstance(rotating.store, AsyncStore):
            task = asyncio.ensure_future(rotating.reencrypt())
        else:
            task = asyncio.ensure_future(asyncio.to_thread(rotating.store.reencrypt))
        for _ in range(500):
            waiting = db.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE 'UPDATE%%'"
            ).fetchone()
            if waiting == (1,):
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("reencrypt never waited for the row")
        writer.commit()
        assert await task == 0
    assert raw(db, token).startswith(Keyring(OLD).prefix)
    assert await rotating.reencrypt() == 1  # the next run takes it


# Every operation through a keyring.


async def test_create_update_touch_and_versions_round_trip(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    secure = encrypted(store, NEW)
    token = new_token()
    assert await secure.create(token, SECRET, in_(60)) is True
    assert await secure.create(token, b"other", in_(60)) is False
    assert SECRET not in raw(db, token)
    assert await secure.find(token) == SECRET
    assert await secure.update(token, bytearray(b"updated"), in_(60)) is True
    assert await secure.find(token) == b"updated"
    stored = raw(db, token)
    assert await secure.touch(token, in_(120)) is True
    assert raw(db, token) == stored  # touch moves the expiry only
    assert await secure.find(token) == b"updated"
    found = await secure.find_versioned(token)
    assert found is not None
    assert found.data == b"updated"
    assert await secure.update_versioned(token, b"versioned", in_(60), found.version) is True
    assert await secure.update_versioned(token, b"late", in_(60), found.version) is False
    again = await secure.find_versioned(token)
    assert again is not None
    assert again.data == b"versioned"
    assert b"versioned" not in raw(db, token)


async def test_hash_tokens_and_owners(store: Both, db: psycopg.Connection[Any]) -> None:
    secure = encrypted(store, NEW, hash_tokens=True, owners=True)
    await secure.create_table()
    token = new_token()
    await secure.commit(token, SECRET, in_(60), owner="bob")
    assert SECRET not in raw(db, hash_token(token))
    assert await secure.find(token) == SECRET
    [owned] = await secure.sessions_of("bob")
    assert (owned.key, owned.data) == (hash_token(token), SECRET)
    assert await secure.all() == {hash_token(token): SECRET}
    assert await secure.walk() == {hash_token(token): SECRET}
    assert await secure.revoke("bob", owned.key) is True


async def test_rotate_encrypts_the_data_anew_for_the_new_token(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    grace = dt.timedelta(seconds=30)
    for options in ({}, {"hash_tokens": True, "owners": True}):
        sealed = encrypted(store, Keyring.generate_key(), **options)
        await sealed.create_table()
        old = new_token()
        owner = {"owner": "alice"} if options else {}
        await sealed.commit(old, b"the cart", in_(600), **owner)
        new = await sealed.rotate(old, grace=grace)
        assert new is not None
        assert await sealed.find(new) == b"the cart"
        assert await sealed.find(old) == b"the cart"  # during the grace
        keys = [hash_token(t) if options else t for t in (old, new)]
        assert raw(db, keys[0]) != raw(db, keys[1])  # each sealed for its own row
        assert b"the cart" not in raw(db, keys[1])
        assert await sealed.rotate(old, grace=grace) is None  # rotated already
        if options:
            assert [s.data for s in await sealed.sessions_of("alice")] == [b"the cart"] * 2
        await sealed.clear()


async def test_concurrent_encrypted_rotations_make_one_successor(
    store: Both, db: psycopg.Connection[Any]
) -> None:
    sealed = encrypted(store, Keyring.generate_key())
    old = new_token()
    await sealed.commit(old, b"x", in_(600))
    grace = dt.timedelta(seconds=30)
    inner = sealed.store
    if isinstance(inner, AsyncStore):
        results = await asyncio.gather(*(inner.rotate(old, grace=grace) for _ in range(8)))
    else:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: inner.rotate(old, grace=grace), range(8)))
    successors = [token for token in results if token is not None]
    assert len(successors) == 1
    assert await sealed.find(successors[0]) == b"x"
    assert db.execute("SELECT count(*) FROM sessions").fetchone() == (2,)


async def test_concurrent_calls_are_combined_and_each_gets_its_own_plaintext(
    store: Both, db: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    batches = Batches()
    secure = encrypted(store, NEW, on_operation=batches)
    callers, rounds = 32, 10
    broken = new_token()
    await secure.commit(broken, b"x", in_(60))
    db.execute("UPDATE sessions SET data = 'not encrypted' WHERE token = %s", (broken,))
    caplog.clear()

    async def work(i: int) -> None:
        token = f"caller-{i}"
        for r in range(rounds):
            data = f"{i}:{r}".encode()
            await secure.commit(token, data, in_(60))
            assert await secure.find(token) == data
            found = await secure.find_versioned(token)
            assert found is not None
            assert found.data == data
            assert await secure.update_versioned(token, data + b"!", in_(60), found.version)
            assert await secure.find(token) == data + b"!"
            assert await secure.find(broken) is None

    if isinstance(secure.store, AsyncStore):
        await asyncio.gather(*(work(i) for i in range(callers)))
    else:
        errors: list[BaseException] = []

        def thread(i: int) -> None:
            try:
                asyncio.run(work(i))  # Both's sync side runs the calls directly
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=thread, args=(i,)) for i in range(callers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
    for operation in ("find", "commit", "find_versioned", "update_versioned"):
        assert batches.sizes.get(operation), operation  # combined at least once
    # One per read of the bad row: a combined find reads it once for all its callers.
    assert 0 < len(crypto_warnings(caplog)) <= callers * rounds
    assert await secure.all() == {
        f"caller-{i}": f"{i}:{rounds - 1}!".encode() for i in range(callers)
    }


def test_the_least_privilege_role_runs_the_encrypted_calls_and_reencrypt(
    sessionstore_dsn: str, db: psycopg.Connection[Any]
) -> None:
    assert main(["migrate", "--owners", "--dsn", sessionstore_dsn]) == 0  # as the owner
    with (
        app_role(db, sessionstore_dsn, "web_crypto") as dsn,
        ConnectionPool(dsn, min_size=1, kwargs={"autocommit": True}) as pool,
    ):
        old = Store(pool, cleanup=NoCleanup(), owners=True, encryption=Keyring(OLD))
        store = Store(pool, cleanup=NoCleanup(), owners=True, encryption=Keyring(NEW, OLD))
        a, b = new_token(), new_token()
        old.commit(a, b"a", in_(60), owner="carol")
        assert store.create(b, b"b", in_(60), owner="carol") is True
        assert store.update(b, b"b2", in_(60)) is True
        assert store.touch(b, in_(90)) is True
        found = store.find_versioned(b)
        assert found is not None
        assert store.update_versioned(b, b"b3", in_(60), found.version) is True
        assert store.find(a) == b"a"
        assert {s.data for s in store.sessions_of("carol")} == {b"a", b"b3"}
        assert store.reencrypt() == 1
        new = Store(pool, cleanup=NoCleanup(), encryption=Keyring(NEW))
        assert new.all() == {a: b"a", b: b"b3"}


# The command line.


#: A well-formed key, fixed so that the parameters' ids are the same in every worker.
GOOD = base64.urlsafe_b64encode(bytes(range(32))).decode()


def keys_env(*keys: bytes) -> dict[str, str]:
    return {"SESSIONSTORE_KEYS": ",".join(base64.urlsafe_b64encode(k).decode() for k in keys)}


def test_cli_reencrypt_prints_how_many_it_rewrote(
    sessionstore_dsn: str, session_store: Store
) -> None:
    # Written with hash_tokens: the command needs no such option, as the stored key is
    # what each value is bound to, however it was made.
    old = Store(session_store.pool, cleanup=NoCleanup(), hash_tokens=True, encryption=Keyring(OLD))
    tokens = [new_token() for _ in range(3)]
    for token in tokens:
        old.commit(token, b"data", in_(60))
    foreign = new_token()
    other = Store(
        session_store.pool, cleanup=NoCleanup(), hash_tokens=True, encryption=Keyring(OTHER)
    )
    other.commit(foreign, b"data", in_(60))
    env = keys_env(NEW, OLD)
    env["SESSIONSTORE_KEYS"] = env["SESSIONSTORE_KEYS"].replace("=", "")  # padding optional
    result = run("reencrypt", "--dsn", sessionstore_dsn, "--batch-size", "2", env=env)
    assert (result.returncode, result.stdout) == (0, "3\n"), result.stderr
    [warning] = result.stderr.splitlines()  # the foreign row, left alone
    assert warning.startswith('a session in "sessions" reads as no session: encrypted under')
    assert foreign not in warning
    assert hash_token(foreign) not in warning
    new = Store(session_store.pool, cleanup=NoCleanup(), hash_tokens=True, encryption=Keyring(NEW))
    assert [new.find(token) for token in tokens] == [b"data"] * 3
    result = run("reencrypt", "--dsn", sessionstore_dsn, env=keys_env(NEW))
    assert (result.returncode, result.stdout) == (0, "0\n")


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (None, "reencrypt needs the keys in $SESSIONSTORE_KEYS"),
        ("", "reencrypt needs the keys in $SESSIONSTORE_KEYS"),
        ("not*base64", "$SESSIONSTORE_KEYS: key 1 is not base64url"),
        ("c2hvcnQ", "$SESSIONSTORE_KEYS: key 1 is 5 bytes long; AES-256 keys are 32 bytes"),
        (GOOD + "," + GOOD[:22], "$SESSIONSTORE_KEYS: key 2 is 16 bytes long"),
    ],
)
def test_cli_reencrypt_refuses_missing_or_bad_keys(
    sessionstore_dsn: str, keys: str | None, message: str
) -> None:
    env = {} if keys is None else {"SESSIONSTORE_KEYS": keys}
    result = run("reencrypt", "--dsn", sessionstore_dsn, env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("sessionstore: error: " + message), result.stderr
    assert len(result.stderr.splitlines()) == 1  # one line, no traceback
    assert GOOD[:22] not in result.stderr  # never echoed
