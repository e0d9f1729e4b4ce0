"""The API's rules as pure functions: templates render once and within a cap, API keys parse and
match, token buckets, which bodies are malformed, duplicate SKUs merged, and the OpenAPI document
listing every status an endpoint answers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from warren.config import Settings
from warren.errors import ConfigError
from warren.testing import run_task
from warren_shop.api.app import OrderRequest, create_app
from warren_shop.api.auth import KeyRing, RateLimiter, parse_keys
from warren_shop.api.limits import BodyRefused, check_json
from warren_shop.roles import notifications
from warren_shop.roles.templates import MAX_RENDERED_CHARS, TemplateTooLarge, render, rendered_length
from warren_shop.settings import ApiSettings

BOMB = {"a": "{{b}}" * 200, "b": "{{c}}" * 200, "c": "x" * 1000}  # 40,000,000,000 characters if re-expanded


def test_a_substituted_value_is_never_expanded_again() -> None:
    assert render("Hi {{a}}", BOMB) == "Hi " + "{{b}}" * 200
    assert render("{{name}} {{unknown}} {{ name }}", {"name": "Ada"}) == "Ada {{unknown}} {{ name }}"


def test_the_rendered_size_is_known_before_rendering_and_capped() -> None:
    content = "{{c}}" * 21
    assert rendered_length(content, BOMB) == 21_000
    with pytest.raises(TemplateTooLarge, match="21000 characters, over the limit of 20000"):
        render(content, BOMB)
    assert len(render("{{c}}" * 20, BOMB)) == 20_000


def test_a_worker_dead_letters_a_notification_over_the_cap_without_rendering_it() -> None:
    message = {"id": "n-1", "type": "email", "recipient": "a@b.co", "content": "{{v}}" * 2000,
               "variables": {"v": "x" * 1000}}
    result = run_task(notifications.email, "send", message)
    assert (result.outcome, result.reason) == ("dead_lettered", "schema_violation")
    assert f"over the limit of {MAX_RENDERED_CHARS}" in result.error_message


@pytest.mark.parametrize(("variables", "why"), [
    ({f"v{n}": "x" for n in range(51)}, "at most 50 items"),  # too many variables
    ({"v": "x" * 1001}, "at most 1000 characters"),  # a value too long
    ({"no spaces": "x"}, "should match pattern"),  # a name that is not a placeholder's
    ({"v": {"nested": "x"}}, "valid string"),  # values are scalars
])
def test_a_notifications_variables_are_bounded(variables: dict[str, object], why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        notifications.Notification(id="n", type="sms", recipient="+44 20 7946 0000", content="hi", variables=variables)


def test_keys_parse_with_their_scopes_and_match_in_either_form(tmp_path: Path) -> None:
    clear, hashed = "k" * 20, "h" * 20
    path = tmp_path / "keys"
    path.write_text(f"# comment\nshop orders:write,orders:read {clear}\n"
                    f"ops admin sha256:{hashlib.sha256(hashed.encode()).hexdigest()}\n")
    ring = KeyRing(path)
    shop, ops = ring.find(clear), ring.find(hashed)
    assert shop is not None and shop.name == "shop" and shop.allows("orders:read")
    assert not shop.allows("notifications:write")
    assert ops is not None and ops.allows("notifications:write")  # admin holds every scope
    assert ring.find("k" * 19) is None and ring.find("") is None


def test_keys_in_a_directory_as_a_secret_is_mounted(tmp_path: Path) -> None:
    (tmp_path / "..data").mkdir()  # what the kubelet adds: ignored
    (tmp_path / "current").write_text("new orders:write " + "n" * 16)
    (tmp_path / "previous").write_text("old orders:write " + "o" * 16)
    ring = KeyRing(tmp_path)
    assert ring.find("n" * 16) is not None and ring.find("o" * 16) is not None


@pytest.mark.parametrize(("text", "error"), [
    ("shop orders:write", "line 1: expected `NAME SCOPE[,SCOPE...] KEY`"),
    ("shop orders:delete " + "k" * 16, "line 1: unknown scope orders:delete"),
    ("shop orders:write short", "line 1: the key of 'shop' is shorter than 16 characters"),
    ("shop admin sha256:abc", "line 1: sha256: must be followed by 64 hex digits"),
])
def test_a_bad_keys_file_names_the_line_but_never_the_key(text: str, error: str) -> None:
    with pytest.raises(ConfigError, match="line 1") as caught:
        parse_keys(text, source="keys")
    assert error in str(caught.value) and "short " not in str(caught.value)


def test_without_keys_the_api_refuses_to_be_built_unless_it_is_explicitly_open(tmp_path: Path) -> None:
    settings = Settings(_env_file=None)
    with pytest.raises(ConfigError, match="no API keys: set WARREN_API_KEYS_FILE"):
        create_app(settings, ApiSettings(_env_file=None))  # type: ignore[call-arg]
    (tmp_path / "empty").write_text("# nobody\n")
    with pytest.raises(ConfigError, match="holds no key"):
        create_app(settings, ApiSettings(keys_file=tmp_path / "empty"))


def test_a_token_bucket_allows_its_burst_then_its_rate() -> None:
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.take("k", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("k", now=0.0) == pytest.approx(0.5)  # a token every half second
    assert limiter.take("other", now=0.0) == 0.0  # each caller has its own bucket
    assert limiter.take("k", now=0.6) == 0.0
    assert limiter.take("k", now=0.6) > 0


@pytest.mark.parametrize(("body", "content_type", "why"), [
    (b'{"content": "\\ud800"}', "application/json", "lone surrogate"),
    (b'{"content": "\xff"}', "application/json", "not valid UTF-8"),
    (b"{not json", None, "not JSON"),
    (b"[" * 40 + b"]" * 40, "application/json", "nested deeper than 32"),
    (b"[" * 50_000, "application/json", "nested deeper than 32"),
    (b'{"a": 1}', "text/plain", "must be JSON"),
])
def test_a_malformed_body_is_refused_with_422(body: bytes, content_type: str | None, why: str) -> None:
    with pytest.raises(BodyRefused, match=why) as refused:
        check_json(body, content_type)
    assert refused.value.status == 422


def test_lines_of_the_same_sku_are_merged_within_the_bound() -> None:
    customer = {"email": "a@b.co"}
    order = OrderRequest.model_validate({"customer": customer, "items": [
        {"sku": "sku-tea", "quantity": 2}, {"sku": "sku-apple", "quantity": 1}, {"sku": "sku-tea", "quantity": 3}]})
    assert [(i.sku, i.quantity) for i in order.items] == [("sku-tea", 5), ("sku-apple", 1)]
    with pytest.raises(ValidationError, match="add up to 101 units, over 100"):
        OrderRequest.model_validate({"customer": customer, "items": [
            {"sku": "sku-tea", "quantity": 100}, {"sku": "sku-tea", "quantity": 1}]})


def test_the_openapi_document_lists_every_status_each_endpoint_answers() -> None:
    app = create_app(Settings(_env_file=None), ApiSettings(auth="none"))
    paths = json.loads(json.dumps(app.openapi()))["paths"]
    write = {"202", "400", "401", "403", "408", "409", "413", "422", "429", "503"}
    read = {"200", "401", "403", "404", "422", "429", "503"}
    assert set(paths["/api/v1/orders"]["post"]["responses"]) == write
    assert set(paths["/api/v1/notifications/send"]["post"]["responses"]) == write
    assert set(paths["/api/v1/orders/{order_id}"]["get"]["responses"]) == read
    assert set(paths["/api/v1/notifications/{notification_id}/status"]["get"]["responses"]) == read
    assert paths["/api/v1/orders"]["post"]["security"] == [{"HTTPBearer": []}]
