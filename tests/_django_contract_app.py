"""The Django example app plus the session contract's routes (see `_session_contract`).

gunicorn loads it in the Django tests: ``_django_contract_app:create_app(...)``, one
gthread worker, so that the requests overlap and share one `Gates`.
"""

from __future__ import annotations

from typing import Any

from _gates import Gates, params
from _session_contract import sessions_json
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.signals import user_logged_in
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

from sessionstore.examples import django_app
from sessionstore.integrations.django import revoke, sessions_of, signed_in_within

GATES = Gates()


def set_(request: HttpRequest) -> HttpResponse:
    key, value, group, n, hold = params(request.GET.dict())
    list(request.session.items())  # loaded before the gate
    GATES.wait(group, n, hold)
    request.session[key] = value
    return HttpResponse("ok")


def get(request: HttpRequest) -> HttpResponse:
    items = request.session.items()
    return JsonResponse({key: value for key, value in items if not key.startswith("_")})


def logout(request: HttpRequest) -> HttpResponse:
    request.session.flush()
    return HttpResponse("ok")


def arrived(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(GATES.arrived(request.GET["group"])))


def release(request: HttpRequest) -> HttpResponse:
    GATES.release(request.GET["hold"])
    return HttpResponse("ok")


def login(request: HttpRequest) -> HttpResponse:
    # What django.contrib.auth.login does to the session (see the example's /login).
    request.session.cycle_key()
    request.session[SESSION_KEY] = request.GET["user"]
    user_logged_in.send(sender=None, request=request, user=request.GET["user"])
    return HttpResponse("ok")


def sessions(request: HttpRequest) -> HttpResponse:
    owner = request.session.get(SESSION_KEY)
    listed = sessions_of(owner, current=request.session) if owner else []
    return HttpResponse(sessions_json(listed), content_type="application/json")


def revoke_(request: HttpRequest) -> HttpResponse:
    owner = request.session.get(SESSION_KEY)
    return JsonResponse(bool(owner) and revoke(owner, request.GET["id"]), safe=False)


def fresh(request: HttpRequest) -> HttpResponse:
    within = float(request.GET["within"])
    return JsonResponse(signed_in_within(request, within), safe=False)


def create_app(**options: Any) -> Any:
    """The example's WSGI application (`django_app.create_app`'s options) with the routes."""
    app = django_app.create_app(**options)
    django_app.urlpatterns.extend(
        [
            path("c/set", set_),
            path("c/get", get),
            path("c/logout", logout),
            path("c/arrived", arrived),
            path("c/release", release),
            path("c/login", login),
            path("c/sessions", sessions),
            path("c/revoke", revoke_),
            path("c/fresh", fresh),
        ]
    )
    return app
