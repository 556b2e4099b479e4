"""The admin route table: 404/405 answers, parameters checked by name and type."""

from __future__ import annotations

import pytest

from fixserver.admin.router import AdminCall, AdminError, AdminRouter, Params


def _router() -> AdminRouter:
    router = AdminRouter()
    router.add("POST", "/admin/thing", "thing", "do a thing",
               lambda call: {"n": call.params.integer("n")}, ("n",))
    return router


def test_resolve_finds_routes_and_answers_404_and_405():
    """Known paths resolve (a trailing slash too, HEAD as GET); others are 404 or 405."""
    router = _router()
    assert router.resolve("POST", "/admin/thing/").name == "thing"
    assert router.resolve("HEAD", "/admin").name == "index"
    with pytest.raises(AdminError) as caught:
        router.resolve("GET", "/admin/nothing")
    assert caught.value.status == 404
    with pytest.raises(AdminError) as caught:
        router.resolve("GET", "/admin/thing")
    assert caught.value.status == 405 and dict(caught.value.headers)["Allow"] == "POST"
    with pytest.raises(ValueError):
        router.add("POST", "/admin/thing", "again", "twice", lambda call: {})


def test_index_lists_every_action():
    """GET /admin lists method, path, summary and parameters of each action."""
    router = _router()
    answer = router.resolve("GET", "/admin").handler(AdminCall("ops", Params({})))
    assert {"method": "POST", "path": "/admin/thing", "name": "thing",
            "summary": "do a thing", "params": ["n"]} in answer["actions"]


def test_unknown_parameters_are_refused():
    """A parameter the route does not take is a 400 naming it (a typo does nothing)."""
    router = _router()
    route = router.resolve("POST", "/admin/thing")
    with pytest.raises(AdminError, match="activ"):
        router.params_of(route, {"activ": "1"})


@pytest.mark.parametrize(("getter", "value", "expected"), [
    ("boolean", "1", True), ("boolean", "off", False), ("boolean", True, True),
    ("integer", "12", 12), ("integer", 7, 7), ("text", "ok", "ok"),
])
def test_typed_getters_accept_query_strings_and_json_values(getter, value, expected):
    """Query-string text and JSON values both convert."""
    assert getattr(Params({"p": value}), getter)("p") == expected


@pytest.mark.parametrize(("getter", "value"), [
    ("boolean", "maybe"), ("integer", "-1"), ("integer", True), ("integer", 0),
    ("text", ""), ("text", "a\x01b"), ("text", "x" * 201), ("text", 5),
])
def test_typed_getters_refuse_bad_values_with_400(getter, value):
    """Wrong types, control characters, out-of-range numbers: 400."""
    kwargs = {"minimum": 1} if getter == "integer" else {}
    with pytest.raises(AdminError) as caught:
        getattr(Params({"p": value}), getter)("p", **kwargs)
    assert caught.value.status == 400
    with pytest.raises(AdminError, match="missing parameter p"):
        getattr(Params({}), getter)("p")
