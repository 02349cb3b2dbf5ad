"""The limits on what a store accepts, and the checks that apply them before any SQL.

PostgreSQL answers bad input late or wrongly (a NUL raises DataError, a lone
surrogate UnicodeEncodeError, a long token fails the btree on commit only, a naive
datetime is read in the server's TimeZone), so every argument is checked here first.
Error messages never contain a token: it is a credential.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import secrets

#: The longest token accepted, in characters. SCS tokens are 43 characters; the
#: limit keeps every token (4 bytes per character at worst) well inside PostgreSQL's
#: btree entry limit of about 2.7 KB, which would otherwise fail on commit only.
MAX_TOKEN_LENGTH = 512

#: The longest owner (a user id) accepted, in characters.
MAX_OWNER_LENGTH = 512

#: The default `max_data_size`: the largest payload a store accepts, in bytes.
DEFAULT_MAX_DATA_SIZE = 1024 * 1024

#: PostgreSQL truncates identifiers longer than this many bytes (NAMEDATALEN - 1).
MAX_IDENTIFIER_BYTES = 63


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
    """Return `token` if it may reach SQL, else raise TypeError or ValueError.

    A token is a str of 1 to `MAX_TOKEN_LENGTH` characters, without NUL or lone surrogates.
    """
    return _text(token, "token", MAX_TOKEN_LENGTH)


def validate_owner(owner: object) -> str:
    """Return `owner` (a user id; ``str(user_id)`` for a number) if valid, as for a token."""
    return _text(owner, "owner", MAX_OWNER_LENGTH)


def validate_identifier(name: object, what: str) -> str:
    """Return a table or schema name unchanged if PostgreSQL can store it as written.

    Any text is accepted, since it is always quoted: capitals, spaces, quotes,
    semicolons and dots name exactly that relation. An empty name, NUL, lone
    surrogates or more than 63 bytes (PostgreSQL would truncate it) raise ValueError.
    """
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
    """Return a bytes-like payload of at most `max_size` bytes, as psycopg can send it.

    A memoryview that is not a flat, contiguous buffer of single bytes is copied to bytes.
    """
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
    if isinstance(max_data_size, bool) or not isinstance(max_data_size, int):
        raise TypeError(f"max_data_size must be an int, not {type(max_data_size).__name__}")
    if not 0 <= max_data_size < 1024**3:
        raise ValueError("max_data_size must be between 0 and 1 GiB (PostgreSQL's limit)")
    return max_data_size


def validate_batch_size(batch_size: object) -> int:
    """Return a batch size (the most sessions one statement deletes) if it is a positive int."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be an int, not {type(batch_size).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return batch_size


def validate_max_sessions(max_sessions: object, owners: bool) -> int | None:
    """Return the `max_sessions_per_owner` option: None, or an int of at least 1 with owners."""
    if max_sessions is None:
        return None
    if isinstance(max_sessions, bool) or not isinstance(max_sessions, int):
        raise TypeError(f"max_sessions_per_owner must be an int, not {type(max_sessions).__name__}")
    if max_sessions < 1:
        raise ValueError(f"max_sessions_per_owner must be at least 1, got {max_sessions}")
    if not owners:
        raise ValueError(
            "max_sessions_per_owner needs owners=True (sessions are counted per owner)"
        )
    return max_sessions


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
    """The key a token is stored under with ``hash_tokens=True``, as SCS's HashTokenInStore.

    Unpadded base64url of the SHA-256 digest of the token's UTF-8 bytes: 43
    characters, so a table shared with a Go SCS application stays compatible.
    """
    digest = hashlib.sha256(token.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
