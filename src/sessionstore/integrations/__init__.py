"""Session middleware for web frameworks, on top of `Store` and `AsyncStore`.

Each integration is a submodule with its own optional extra; nothing here imports a
web framework, so ``import sessionstore`` never does either:

- `sessionstore.integrations.flask`: a Flask ``SessionInterface`` on `Store`
  (``pip install "sessionstore[flask]"``).
- `sessionstore.integrations.starlette`: a ``starsessions`` store on `AsyncStore`,
  for Starlette and FastAPI (``pip install "sessionstore[starlette]"``).
- `sessionstore.integrations.quart`: a Quart ``SessionInterface`` on `AsyncStore`,
  the Flask one's twin (``pip install "sessionstore[quart]"``).
- `sessionstore.integrations.django`: a Django session engine on `Store` and
  `AsyncStore` (``pip install "sessionstore[django]"``); it keeps Django's own
  session keys.

They issue tokens as SCS does (32 random bytes, url-safe base64: 43 characters), never
adopt a token the client made up, and never log tokens.
"""

from __future__ import annotations

__all__: list[str] = []
