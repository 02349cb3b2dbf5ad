"""The limits on what a store accepts, and the checks that apply them before any SQL.

PostgreSQL answers bad input late or wrongly, so every argument is checked here first;
messages never contain a token (a credential). See docs/usage.md#bad-input.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets

#: The longest token accepted, in characters: inside PostgreSQL's btree entry limit
#: even at 4 bytes a character (docs/usage.md#bad-input).
MAX_TOKEN_LENGTH = 512

#: The longest owner (a user id) accepted, in characters.
MAX_OWNER_LENGTH = 512

#: The default `max_data_size`: the largest payload a store accepts, in bytes.
DEFAULT_MAX_DATA_SIZE = 1024 * 1024

#: PostgreSQL truncates identifiers longer than this many bytes (NAMEDATALEN - 1).
MAX_IDENTIFIER_BYTES = 63


def validate_int(value: object, what: str) -> int:
    """Return `value` if it is an int and not a bool, else raise TypeError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    return value


def _text(value: object, what: str, longest: int) -> str:
    """Return `value` if it is a str of 1 to `longest` characters, no NUL or lone surrogate."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    if len(value) > longest:
        raise ValueError(f"{what} is {len(value)} characters long; the maximum is {longest}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{what} must be valid Unicode (no lone surrogates)") from None
    if "\x00" in value:
        raise ValueError(f"{what} must not contain a NUL character")
    return value


def validate_token(token: object) -> str:
    """Return `token` if it may reach SQL: a str of 1 to `MAX_TOKEN_LENGTH` characters (`_text`)."""
    return _text(token, "token", MAX_TOKEN_LENGTH)


def validate_owner(owner: object) -> str:
    """Return `owner` (a user id; ``str(user_id)`` for a number) if valid, as for a token."""
    return _text(owner, "owner", MAX_OWNER_LENGTH)


def validate_identifier(name: object, what: str) -> str:
    """Return a table or schema name unchanged if PostgreSQL can store it as written, quoted."""
    if not isinstance(name, str):
        raise TypeError(f"{what} name must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError(f"{what} name must not be empty")
    if "\x00" in name:
        raise ValueError(f"{what} name must not contain a NUL character")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{what} name must be valid Unicode (no lone surrogates)") from None
    if size > MAX_IDENTIFIER_BYTES:
        raise ValueError(
            f"{what} name is {size} bytes long; PostgreSQL identifiers are at most "
            f"{MAX_IDENTIFIER_BYTES} bytes"
        )
    return name


def validate_data(data: object, max_size: int) -> bytes | bytearray | memoryview:
    """Return a bytes-like payload of at most `max_size` bytes, as psycopg can send it."""
    if isinstance(data, bytes | bytearray):
        size = len(data)
    elif isinstance(data, memoryview):
        size = data.nbytes
        if not data.c_contiguous or data.ndim != 1 or data.itemsize != 1:
            data = data.tobytes()  # psycopg sends only flat byte buffers
    else:
        raise TypeError(f"data must be bytes, bytearray or memoryview, not {type(data).__name__}")
    if size > max_size:
        raise ValueError(f"data is {size} bytes; this store accepts at most {max_size}")
    return data


def validate_expiry(expiry: object) -> dt.datetime:
    """Return `expiry` if it is timezone-aware (PostgreSQL reads a naive one in its TimeZone)."""
    if not isinstance(expiry, dt.datetime):
        raise TypeError(f"expiry must be a datetime, not {type(expiry).__name__}")
    if expiry.tzinfo is None or expiry.utcoffset() is None:
        raise ValueError(
            "expiry must be timezone-aware, e.g. datetime.now(timezone.utc) + lifetime"
        )
    return expiry


def validate_max_data_size(max_data_size: object) -> int:
    """Return the `max_data_size` option if it is an int from 0 to PostgreSQL's 1 GiB limit."""
    size = validate_int(max_data_size, "max_data_size")
    if not 0 <= size < 1024**3:
        raise ValueError("max_data_size must be between 0 and 1 GiB (PostgreSQL's limit)")
    return size


def validate_batch_size(batch_size: object) -> int:
    """Return a batch size (the most sessions one statement deletes) if it is a positive int."""
    size = validate_int(batch_size, "batch_size")
    if size < 1:
        raise ValueError(f"batch_size must be at least 1, got {size}")
    return size


def validate_max_sessions(max_sessions: object, owners: bool) -> int | None:
    """Return the `max_sessions_per_owner` option: None, or an int of at least 1 with owners."""
    if max_sessions is None:
        return None
    cap = validate_int(max_sessions, "max_sessions_per_owner")
    if cap < 1:
        raise ValueError(f"max_sessions_per_owner must be at least 1, got {cap}")
    if not owners:
        raise ValueError(
            "max_sessions_per_owner needs owners=True (sessions are counted per owner)"
        )
    return cap


def validate_grace(grace: object) -> dt.timedelta:
    """Return a rotation's `grace` if it is a timedelta from 0 to what a timestamp can add."""
    if not isinstance(grace, dt.timedelta):
        raise TypeError(f"grace must be a datetime.timedelta, not {type(grace).__name__}")
    if grace < dt.timedelta(0):
        raise ValueError("grace must not be negative (timedelta(0) ends the old token at once)")
    try:
        dt.datetime.now(dt.UTC) + grace
    except OverflowError:
        # PostgreSQL would fail on the statement (timestamp out of range).
        raise ValueError("grace is too long: now + grace is past the year 9999") from None
    return grace


def new_token() -> str:
    """A fresh session token: 32 random bytes, url-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The key a token is stored under with ``hash_tokens=True``, as SCS's HashTokenInStore."""
    digest = hashlib.sha256(token.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
