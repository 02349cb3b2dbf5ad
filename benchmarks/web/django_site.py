"""The web benchmark's Django project: settings, views and URLs in one module."""

from __future__ import annotations

from typing import Any

import psycopg.conninfo
from django.http import HttpRequest, HttpResponse
from django.urls import path

from .apps import SECRET, AppConfig, bump, peek, renew_after

DJANGO_INTEGRATION = "sessionstore.integrations.django"
ENGINES = {
    "db": "django.contrib.sessions.backends.db",
    "cached_db": "django.contrib.sessions.backends.cached_db",
    "redis": "django.contrib.sessions.backends.cache",
    "sessionstore": DJANGO_INTEGRATION,
    "sessionstore-every-request": DJANGO_INTEGRATION,
}

DJANGO_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"

#: libpq parameters passed on to Django's backend as OPTIONS (the search_path, TLS).
_OPTIONS = ("options", "sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout")


def database(dsn: str) -> dict[str, Any]:
    """Django's ``DATABASES["default"]`` for a libpq DSN."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    keys = {"NAME": "dbname", "USER": "user", "PASSWORD": "password", "HOST": "host"}
    return {
        "ENGINE": "django.db.backends.postgresql",
        **{key: params.get(name, "") for key, name in keys.items()},
        "PORT": params.get("port", ""),
        "CONN_MAX_AGE": None,
        "OPTIONS": {name: params[name] for name in _OPTIONS if name in params},
    }


def configure(store: str, config: AppConfig) -> None:
    """Configure Django for `store` (``"none"`` or a key of `ENGINES`)."""
    import django
    from django.conf import settings

    if store != "none" and store not in ENGINES:
        raise ValueError(f"Django has no store {store!r} here")
    ours = ENGINES.get(store) == DJANGO_INTEGRATION  # its own middleware: SCS's headers
    middleware = f"{DJANGO_INTEGRATION}.SessionMiddleware" if ours else DJANGO_MIDDLEWARE
    cache: dict[str, Any] = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    if store == "redis":
        # Django imports the redis client on the first cache access, inside the first
        # request; redis 8 takes most of a second to import on these machines. Every
        # measurement starts a fresh server, so import it before it takes requests, as
        # a long-running process did long before.
        import redis  # noqa: F401

        cache = {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": config.redis(),
        }
    settings.configure(
        DEBUG=False,
        SECRET_KEY=SECRET,
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=["django.contrib.sessions"],
        MIDDLEWARE=[] if store == "none" else [middleware],
        DATABASES={"default": database(config.dsn)},
        SESSION_ENGINE=ENGINES.get(store, ENGINES["db"]),
        SESSIONSTORE={
            "dsn": config.dsn,
            "table": config.table,
            "min_size": config.min_pool,
            "max_size": config.pool,
            "renew_after": renew_after(store),
        },
        CACHES={"default": cache},
        USE_TZ=True,
    )
    django.setup()


def migrate(dsn: str) -> None:
    """Create Django's session table (``manage.py migrate sessions``) in the benchmark's schema."""

    from django.core.management import call_command

    configure("db", AppConfig(dsn))
    call_command("migrate", "sessions", verbosity=0)


def ping(request: HttpRequest) -> HttpResponse:
    return HttpResponse("pong", content_type="text/plain")


def count(request: HttpRequest) -> HttpResponse:
    return HttpResponse(bump(request.session), content_type="text/plain")


def read(request: HttpRequest) -> HttpResponse:
    return HttpResponse(peek(request.session), content_type="text/plain")


urlpatterns = [path("ping", ping), path("count", count), path("read", read)]
