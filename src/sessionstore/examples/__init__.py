"""The example apps: the SCS README's "hello world" on each integrated framework.

Each module is a complete program on sessionstore's public API, to copy from: a
``create_app`` factory and a ``main`` serving it on port 4000 (``python -m
sessionstore.examples.flask_app``). ``python -m sessionstore demo`` serves them
(docs/demo.md); importing one needs its framework's extra.
"""
