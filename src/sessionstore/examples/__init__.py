"""The example apps: the SCS README's "hello world" on every integrated framework.

Each module is a complete program that uses only sessionstore's public API, so it
can be copied into a project as it is: `flask_app` (`PostgresSessionInterface` on
`Store`), `starlette_app` (starsessions with `PostgresStore` on `AsyncStore`),
`litestar_app` (`PostgresStore` and `SessionConfig`), `aiohttp_app`
(aiohttp-session's `PostgresStorage`), `quart_app` (`PostgresSessionInterface` on
`AsyncStore`) and `django_app` (the session engine; WSGI and ASGI). Each has a
``create_app`` factory and a ``main`` that serves it on port 4000, e.g.:

    python -m sessionstore.examples.flask_app
    python -m sessionstore.examples.starlette_app

They ship in the package because ``python -m sessionstore demo`` serves these very
apps (with a throw-away PostgreSQL, a free port and a clean stop); the repository's
``examples/`` directory holds launchers for them. Importing one needs its
framework's extra, e.g. ``pip install "sessionstore[flask,testing]"`` or
``"sessionstore[starlette,testing]" uvicorn``.
"""
