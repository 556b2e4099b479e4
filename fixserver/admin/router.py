"""The admin API's table of actions: method + path -> handler, parameters, error answers.

Pure (no Twisted besides the Deferred a handler may return). A :class:`Route` names its
method, path, the parameters it takes and a one-line summary (``GET /admin`` lists them).
A handler gets an :class:`AdminCall` (who, typed :class:`Params`) and returns the answer (a
JSON-able dict) or a Deferred of it, or raises :class:`AdminError` (status + message).
Adding an action is one handler and one :meth:`AdminRouter.add` line.

Parameters come from the query string and/or a JSON object body; a parameter the route does
not take is refused (a mistyped ``activ=1`` must not silently do something else).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Callable, TypeVar, Union

import attr
from twisted.internet.defer import Deferred

T = TypeVar("T")
Answer = dict
HandlerResult = Union[Answer, "Deferred[Answer]"]


class AdminError(Exception):
    """An action refused: HTTP ``status`` and a message for the operator; ``details`` are
    more fields of the JSON answer (e.g. the engine's ``reason`` and a ``shortfall``)."""

    def __init__(self, status: int, message: str,
                 headers: tuple[tuple[str, str], ...] = (),
                 details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.details = dict(details or {})

    def body(self) -> dict[str, Any]:
        """The JSON answer's fields (the resource adds ``status``)."""
        return {**self.details, "error": self.message}


class Params:
    """The request's parameters with typed getters; each raises AdminError(400)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = dict(values)

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def _get(self, name: str, required: bool) -> Any:
        if name not in self.values or self.values[name] is None:
            if required:
                raise AdminError(400, f"missing parameter {name}")
            return None
        return self.values[name]

    def text(self, name: str, *, required: bool = True, max_length: int = 200) -> str | None:
        """A printable string of at most ``max_length`` characters."""
        value = self._get(name, required)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise AdminError(400, f"{name} must be a non-empty string")
        if len(value) > max_length or not value.isprintable():
            raise AdminError(400, f"{name} must be at most {max_length} printable characters")
        return value

    def boolean(self, name: str) -> bool:
        value = self._get(name, True)
        if isinstance(value, bool):
            return value
        word = str(value).lower()
        if word in ("1", "true", "on", "yes", "y"):
            return True
        if word in ("0", "false", "off", "no", "n"):
            return False
        raise AdminError(400, f"{name} must be true or false")

    def integer(self, name: str, *, required: bool = True, minimum: int = 0) -> int | None:
        value = self._get(name, required)
        if value is None:
            return None
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise AdminError(400, f"{name} must be a whole number >= {minimum}")
        return value

    def choice(self, name: str, choices: Mapping[str, T]) -> T:
        """One of ``choices``' keys (case-insensitive), as its value."""
        value = self._get(name, True)
        found = choices.get(str(value).lower()) if isinstance(value, str) else None
        if found is None:
            raise AdminError(400, f"{name} must be one of {', '.join(choices)}")
        return found


@attr.s(frozen=True, slots=True, auto_attribs=True)
class AdminCall:
    """One admitted request: who sent it (the token's name) and its parameters."""

    who: str
    params: Params


Handler = Callable[[AdminCall], Any]  # returns HandlerResult


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Route:
    """One admin action."""

    method: str
    path: str
    name: str
    summary: str
    handler: Handler
    params: tuple[str, ...] = ()

    @property
    def changes_state(self) -> bool:
        return self.method != "GET"


class AdminRouter:
    """The route table (see module docstring)."""

    def __init__(self) -> None:
        self._routes: dict[str, dict[str, Route]] = {}
        self.add("GET", "/admin", "index", "list the admin actions", self._index)

    def add(self, method: str, path: str, name: str, summary: str, handler: Handler,
            params: Iterable[str] = ()) -> None:
        method = method.upper()
        if method not in ("GET", "POST"):
            raise ValueError("admin actions are GET (read) or POST (change)")
        by_method = self._routes.setdefault(path.rstrip("/"), {})
        if method in by_method:
            raise ValueError(f"{method} {path} is already routed")
        by_method[method] = Route(method, path.rstrip("/"), name, summary, handler,
                                  tuple(params))

    def routes(self) -> list[Route]:
        return [r for by_method in self._routes.values() for r in by_method.values()]

    def resolve(self, method: str, path: str) -> Route:
        """The route of ``method path``; AdminError 404 (no such path) or 405 (method)."""
        by_method = self._routes.get(path.rstrip("/") or "/")
        if by_method is None:
            raise AdminError(404, f"no admin action at {path} (GET /admin lists them)")
        method = method.upper()
        route = by_method.get("GET" if method == "HEAD" else method)
        if route is None:
            allowed = ", ".join(sorted(by_method))
            raise AdminError(405, f"{path} takes {allowed}", (("Allow", allowed),))
        return route

    @staticmethod
    def params_of(route: Route, values: Mapping[str, Any]) -> Params:
        """The route's parameters; AdminError 400 for one it does not take."""
        unknown = sorted(set(values) - set(route.params))
        if unknown:
            takes = ", ".join(route.params) or "no parameters"
            raise AdminError(400, f"unknown parameter(s) {', '.join(unknown)}: "
                                  f"{route.method} {route.path} takes {takes}")
        return Params(values)

    def _index(self, call: AdminCall) -> Answer:
        return {"actions": [
            {"method": r.method, "path": r.path, "name": r.name, "summary": r.summary,
             "params": list(r.params)}
            for r in sorted(self.routes(), key=lambda r: (r.path, r.method))
        ]}
