"""The SCS README's example in Django: sessions in PostgreSQL through sessionstore.

    pip install "sessionstore[django,testing]" uvicorn
    python -m sessionstore.examples.django_app

Then open http://127.0.0.1:4000/put and /get (on ``$SESSIONSTORE_DSN``, or a throw-away
PostgreSQL; uvicorn serves it); ``/`` lists the routes of login and sessions per user.
A whole project in one file: `configure` sets Django up, `create_app` returns the WSGI
application (sync views) or the ASGI one (async views); a server of your own loads them
(docs/integrations-django.md).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import signal
import sys
from collections.abc import Sequence
from typing import Any

import django
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.signals import user_logged_in
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path

from sessionstore.integrations.django import (
    UserSession,
    alogout_everywhere,
    asessions_of,
    logout_everywhere,
    sessions_of,
    store,
    with_lifespan,
)

HOST, PORT = "127.0.0.1", 4000
#: What ``/put`` stores and ``/get`` shows: the Go README's message.
MESSAGE = "Hello from a session!"
#: Who ``/login`` logs in (a real app checks a password first).
USER = "alice"
#: The addresses the app answers to (Django's ``ALLOWED_HOSTS``).
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")

ROUTES = "/put /get /login /sessions /logout-everywhere /logout\n"
STORED = "Stored a message in your session.\n"
LOGGED_IN = f"Logged in as {USER}; your session has a new token.\n"
NOT_LOGGED_IN = "Not logged in: /login first.\n"
LOGGED_OUT = "Logged out; your session is gone.\n"
ENDED = "Logged out {} other session(s); this one stays.\n"


def _text(body: str, status: int = 200) -> HttpResponse:
    return HttpResponse(body, content_type="text/plain; charset=utf-8", status=status)


def _listing(owner: str, sessions: list[UserSession]) -> HttpResponse:
    return _text("\n".join([f"Sessions of {owner}:", *map(listed, sessions)]) + "\n")


def listed(each: UserSession) -> str:
    """One line of ``/sessions``: the session's id (never a key), times and device."""
    device = f"  {each.user_agent or '?'} at {each.ip or '?'}" if each.ip or each.user_agent else ""
    created = "?" if each.created is None else each.created.isoformat(timespec="seconds")
    return (
        f"  {each.id}  created {created}"
        f"  last seen {each.last_seen.isoformat(timespec='seconds')}{device}"
        f"  expires {each.expiry.isoformat(timespec='seconds')}"
        + ("  (this one)" if each.current else "")
    )


# --------------------------------------------------------------------------- sync views (WSGI)


def index(request: HttpRequest) -> HttpResponse:
    """``/``: the routes."""
    return _text(ROUTES)


def put(request: HttpRequest) -> HttpResponse:
    """``/put``: store the message in the session."""
    request.session["message"] = MESSAGE
    return _text(STORED)


def get(request: HttpRequest) -> HttpResponse:
    """``/get``: show the stored message."""
    return _text(str(request.session.get("message", "")) + "\n")


def login(request: HttpRequest) -> HttpResponse:
    """``/login``: log the session in as `USER`, under a new key."""
    # What django.contrib.auth.login does to the session: a new key, the user's id
    # (the engine saves it as the row's owner), the signal (it records the sign-in time).
    request.session.cycle_key()
    request.session[SESSION_KEY] = USER
    user_logged_in.send(sender=None, request=request, user=USER)
    return _text(LOGGED_IN)


def sessions(request: HttpRequest) -> HttpResponse:
    """``/sessions``: list the user's sessions (403 if not logged in)."""
    owner = request.session.get(SESSION_KEY)
    if owner is None:
        return _text(NOT_LOGGED_IN, 403)
    return _listing(owner, sessions_of(owner, current=request.session))


def logout_everywhere_view(request: HttpRequest) -> HttpResponse:
    """``/logout-everywhere``: end the user's other sessions (403 if not logged in)."""
    owner = request.session.get(SESSION_KEY)
    if owner is None:
        return _text(NOT_LOGGED_IN, 403)
    return _text(ENDED.format(logout_everywhere(owner, keep=request.session)))


def logout(request: HttpRequest) -> HttpResponse:
    """``/logout``: delete the session, its row and its cookie."""
    request.session.flush()  # as django.contrib.auth.logout: the row and the cookie go
    return _text(LOGGED_OUT)


# --------------------------------------------------------------------------- async views (ASGI)


async def aindex(request: HttpRequest) -> HttpResponse:
    """Async ``/``: the routes."""
    return _text(ROUTES)


async def aput(request: HttpRequest) -> HttpResponse:
    """Async ``/put``: store the message in the session."""
    await request.session.aset("message", MESSAGE)
    return _text(STORED)


async def aget(request: HttpRequest) -> HttpResponse:
    """Async ``/get``: show the stored message."""
    return _text(str(await request.session.aget("message", "")) + "\n")


async def alogin(request: HttpRequest) -> HttpResponse:
    """Async ``/login``: log the session in as `USER`, under a new key."""
    await request.session.acycle_key()  # as django.contrib.auth.alogin
    await request.session.aset(SESSION_KEY, USER)
    await user_logged_in.asend(sender=None, request=request, user=USER)
    return _text(LOGGED_IN)


async def asessions(request: HttpRequest) -> HttpResponse:
    """Async ``/sessions``: list the user's sessions (403 if not logged in)."""
    owner = await request.session.aget(SESSION_KEY)
    if owner is None:
        return _text(NOT_LOGGED_IN, 403)
    return _listing(owner, await asessions_of(owner, current=request.session))


async def alogout_everywhere_view(request: HttpRequest) -> HttpResponse:
    """Async ``/logout-everywhere``: end the user's other sessions (403 if not logged in)."""
    owner = await request.session.aget(SESSION_KEY)
    if owner is None:
        return _text(NOT_LOGGED_IN, 403)
    return _text(ENDED.format(await alogout_everywhere(owner, keep=request.session)))


async def alogout(request: HttpRequest) -> HttpResponse:
    """Async ``/logout``: delete the session, its row and its cookie."""
    await request.session.aflush()
    return _text(LOGGED_OUT)


_PATHS = ("", "put", "get", "login", "sessions", "logout-everywhere", "logout")
_SYNC_URLS = list(
    map(path, _PATHS, (index, put, get, login, sessions, logout_everywhere_view, logout))
)
_ASYNC_URLS = list(
    map(path, _PATHS, (aindex, aput, aget, alogin, asessions, alogout_everywhere_view, alogout))
)

#: This module is the project's URLconf (``ROOT_URLCONF``): `configure` fills it with
#: the sync views or the async ones.
urlpatterns: list[URLPattern] = []


def configure(
    dsn: str | None = None,
    *,
    idle_timeout: dt.timedelta | float = dt.timedelta(hours=24),
    lifetime: dt.timedelta | float | None = None,
    asgi: bool = False,
    secret_key: str | None = None,
    allowed_hosts: Sequence[str] = LOCAL_HOSTS,
    **sessionstore: Any,
) -> None:
    """Configure Django for the example (once per process: Django's settings are global).

    `dsn` defaults to ``$SESSIONSTORE_DSN``; `idle_timeout` and `lifetime` are SCS's
    ``IdleTimeout`` and ``Lifetime`` (``SESSION_COOKIE_AGE``, ``SESSIONSTORE["lifetime"]``);
    `sessionstore` holds more ``SESSIONSTORE`` settings. `secret_key` defaults to
    ``$DJANGO_SECRET_KEY``, else a random key: processes that share sessions need the
    same one, so configure before the fork (``gunicorn --preload``) or set it.
    """
    if settings.configured:
        raise RuntimeError("Django is configured already: one example app per process")
    dsn = dsn if dsn is not None else os.environ.get("SESSIONSTORE_DSN")
    if not dsn:
        raise RuntimeError("no DSN: pass one, or set $SESSIONSTORE_DSN")
    if isinstance(idle_timeout, dt.timedelta):
        idle_timeout = idle_timeout.total_seconds()
    urlpatterns[:] = _ASYNC_URLS if asgi else _SYNC_URLS
    settings.configure(
        DEBUG=False,
        SECRET_KEY=secret_key or os.environ.get("DJANGO_SECRET_KEY") or secrets.token_urlsafe(50),
        ALLOWED_HOSTS=list(allowed_hosts),
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        DATABASES={},  # no ORM here: the sessions go through sessionstore
        MIDDLEWARE=["sessionstore.integrations.django.SessionMiddleware"],
        SESSION_ENGINE="sessionstore.integrations.django",
        SESSION_COOKIE_AGE=int(idle_timeout),
        SESSIONSTORE={"dsn": dsn, "lifetime": lifetime, **sessionstore, "owners": True},
        USE_TZ=True,
    )
    django.setup()


def create_app(dsn: str | None = None, *, asgi: bool = False, **options: Any) -> Any:
    """Configure Django (see `configure`); the WSGI application, or with `asgi` the ASGI one."""
    configure(dsn, asgi=asgi, **options)
    if asgi:
        from django.core.asgi import get_asgi_application

        return with_lifespan(get_asgi_application())
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def __getattr__(name: str) -> Any:
    # Made on first access, not at import: importing the module configures nothing.
    if name in ("application", "asgi_application"):
        app = create_app(asgi=name == "asgi_application")
        globals()[name] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Serve the app on port 4000 until Ctrl-C (or SIGTERM)."""
    import uvicorn

    from sessionstore.testing import ephemeral_postgres

    # uvicorn stops on either signal, then raises it again: unwind, deleting PostgreSQL.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt), ephemeral_postgres() as server:
        print(f"PostgreSQL: {server.source}")
        app = create_app(server.dsn, asgi=True)
        store().create_table()  # with the owner column (added if the table lacks it)
        uvicorn.run(app, host=HOST, port=PORT)


if __name__ == "__main__":
    main()
