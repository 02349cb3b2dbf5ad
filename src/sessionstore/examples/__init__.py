"""The example apps: the SCS README's "hello world" on Flask and on Starlette.

Each module is a complete program that uses only sessionstore's public API, so it
can be copied into a project as it is: `flask_app` (`PostgresSessionInterface` on
`Store`) and `starlette_app` (starsessions' middleware with `PostgresStore` on
`AsyncStore`). Each has a ``create_app`` factory and a ``main`` that serves it on
port 4000:

    python -m sessionstore.examples.flask_app
    python -m sessionstore.examples.starlette_app

They ship in the package because ``python -m sessionstore demo`` serves these very
apps (with a throw-away PostgreSQL, a free port and a clean stop); the repository's
``examples/`` directory holds launchers for them. Importing one needs its
framework: ``pip install "sessionstore[flask,testing]"`` or
``"sessionstore[starlette,testing]" uvicorn``.
"""
