"""The admin gate: disabled without tokens, 401 without a bearer token, 403 for a wrong one,
cross-site requests (Origin, form bodies) refused for changes."""

from __future__ import annotations

import pytest

from fixserver.admin.gate import Admitted, Refusal, admit
from fixserver.admin.tokens import AdminToken, TokenVerifier

SECRET = "ops-secret-0123456789abcdef"
VERIFIER = TokenVerifier((AdminToken("ops", SECRET),))
BEARER = [f"Bearer {SECRET}"]


def test_no_token_configured_disables_everything():
    """Without tokens every request is refused 403 with a message saying how to enable it."""
    refusal = admit(TokenVerifier(()), "GET", BEARER)
    assert isinstance(refusal, Refusal) and refusal.status == 403
    assert "AdminToken" in refusal.error


@pytest.mark.parametrize("authorization", [[], ["Basic b3BzOnNlY3JldA=="], ["Bearer"],
                                           ["Bearer "], [BEARER[0], BEARER[0]]])
def test_missing_bearer_token_is_401_with_www_authenticate(authorization):
    """No (or no single) Bearer credential: 401 and a WWW-Authenticate challenge."""
    refusal = admit(VERIFIER, "POST", authorization)
    assert isinstance(refusal, Refusal) and refusal.status == 401
    assert dict(refusal.headers)["WWW-Authenticate"].startswith("Bearer realm=")


def test_wrong_token_is_403_and_the_right_one_names_its_owner():
    """A wrong secret: 403; the right one (scheme in any case): admitted as the token's name."""
    refusal = admit(VERIFIER, "GET", ["Bearer not-the-secret-at-all"])
    assert isinstance(refusal, Refusal) and refusal.status == 403
    assert admit(VERIFIER, "GET", BEARER) == Admitted("ops")
    assert admit(VERIFIER, "POST", [f"bearer {SECRET}"], "application/json") == Admitted("ops")


def test_cross_site_form_post_is_refused():
    """A browser form (no Authorization, form content type, an Origin) never gets through;
    with a token a change is still refused if it has an Origin or a form body."""
    form = "application/x-www-form-urlencoded"
    refusal = admit(VERIFIER, "POST", [], form, "https://evil.example")
    assert isinstance(refusal, Refusal) and refusal.status == 401
    for content_type in (form, "multipart/form-data; boundary=x", "text/plain;charset=utf-8"):
        refusal = admit(VERIFIER, "POST", BEARER, content_type)
        assert isinstance(refusal, Refusal) and refusal.status == 415, content_type
    refusal = admit(VERIFIER, "POST", BEARER, "application/json", "http://127.0.0.1:9100")
    assert isinstance(refusal, Refusal) and refusal.status == 403
    # reads change nothing: an Origin does not matter there
    assert admit(VERIFIER, "GET", BEARER, None, "http://x") == Admitted("ops")
