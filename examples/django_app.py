"""Run the Django example app: ``python examples/django_app.py``, then open http://127.0.0.1:4000/put.

The app's source is ``src/sessionstore/examples/django_app.py``, a complete program to copy
from: it ships in the package because ``python -m sessionstore demo`` serves the very same
app, so there is one copy of it. This file only runs it.
"""

from sessionstore.examples.django_app import main

if __name__ == "__main__":
    main()
