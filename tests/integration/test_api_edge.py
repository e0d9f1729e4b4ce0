"""The API process as the internet meets it (a real uvicorn, a real broker): keys and scopes,
rotation, the rate limit, bodies too large or too slow, headers too slow, malformed bodies, the
template bomb; each request gets its status, never a 500."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.api import Keys, bearer, raw_exchange, running_api, status_of
from warren.testing.processes import child_python_path
from warren_shop.local import LocalApi

pytestmark = pytest.mark.broker
ORDER = {"customer": {"email": "ada@example.com"}, "items": [{"sku": "sku-tea", "quantity": 1}]}
NOTE = {"type": "email", "recipient": "ada@example.com", "content": "Hello {{name}}", "variables": {"name": "Ada"}}


@pytest.fixture(scope="module")
def edge(broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalApi, Keys]]:
    with running_api(broker, tmp_path_factory.mktemp("edge"), WARREN_API_RATE_LIMIT="2",
                     WARREN_API_RATE_BURST="30", WARREN_API_BODY_TIMEOUT="1", WARREN_API_HEADER_TIMEOUT="1",
                     WARREN_API_MAX_BODY_BYTES="4096") as (api, keys, _settings):
        api.key = None  # every request here says which key it sends
        yield api, keys


def raw_post(api: LocalApi, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    request = urllib.request.Request(api.url + path, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_without_a_known_key_is_401_and_the_probes_stay_open(edge: tuple[LocalApi, Keys]) -> None:
    api, keys = edge
    for headers in ({}, bearer("not-a-key-of-ours-at-all"), {"Authorization": f"Basic {keys.writer}"}):
        request = urllib.request.Request(api.url + "/api/v1/orders", data=json.dumps(ORDER).encode(), method="POST",
                                         headers={"content-type": "application/json", **headers})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401 and refused.value.headers["WWW-Authenticate"] == "Bearer"
    assert api.call("GET", "/healthz")[0] == api.call("GET", "/readyz")[0] == 200
    assert api.call("GET", "/openapi.json")[0] == 200


def test_a_key_without_the_scope_is_403(edge: tuple[LocalApi, Keys]) -> None:
    api, keys = edge
    assert api.call("POST", "/api/v1/orders", ORDER, headers=bearer(keys.reader)) == (
        403, {"detail": "the API key 'reader' lacks the scope orders:write"})
    assert api.call("GET", "/api/v1/orders/o-none", headers=bearer(keys.writer))[0] == 403
    assert api.call("GET", "/api/v1/orders/o-none", headers=bearer(keys.reader))[0] == 404
    assert api.call("GET", "/api/v1/admin/pools", headers=bearer(keys.writer))[0] == 503  # no operators' token
    assert api.call("GET", "/api/v1/admin/pools", headers=bearer(keys.admin))[0] == 200  # an admin key opens them


def test_a_key_is_rotated_without_a_restart(edge: tuple[LocalApi, Keys]) -> None:
    api, keys = edge
    old = keys.reader
    keys.reader = "rotated-reader-key-0123456789"
    with keys.path.open("a") as f:
        f.write(f"reader orders:read {keys.reader}\n")
    deadline = time.monotonic() + 5
    while api.call("GET", "/api/v1/orders/o-none", headers=bearer(keys.reader))[0] != 404:
        assert time.monotonic() < deadline, "the new key was not taken up within 5 s"
        time.sleep(0.1)
    assert api.call("GET", "/api/v1/orders/o-none", headers=bearer(old))[0] == 404  # both, while clients move
    keys.write()  # the old one removed
    while api.call("GET", "/api/v1/orders/o-none", headers=bearer(old))[0] != 401:
        assert time.monotonic() < deadline + 5, "the removed key still works after 5 s"
        time.sleep(0.1)


def test_past_its_rate_a_key_gets_429_with_retry_after(edge: tuple[LocalApi, Keys]) -> None:
    api, keys = edge
    statuses = []
    for _ in range(40):
        request = urllib.request.Request(api.url + "/api/v1/notifications/n-none/status", headers=bearer(keys.admin))
        try:
            statuses.append(urllib.request.urlopen(request, timeout=10).status)
        except urllib.error.HTTPError as e:
            statuses.append(e.code)
            if e.code == 429:
                retry_after = e.headers["Retry-After"]
    assert 429 in statuses and statuses.count(404) >= 30  # the burst, then the limit
    assert int(retry_after) >= 1
    assert api.call("GET", "/api/v1/orders/o-none", headers=bearer(keys.reader))[0] == 404  # other keys unaffected


def test_a_body_over_the_limit_is_413_with_or_without_a_content_length(edge: tuple[LocalApi, Keys]) -> None:
    api, keys = edge
    big = json.dumps({**NOTE, "content": "x" * 5000}).encode()
    head = f"POST /api/v1/notifications/send HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {keys.writer}\r\n" \
           "Content-Type: application/json\r\n"
    declared, _ = raw_exchange(api.url, [f"{head}Content-Length: {len(big)}\r\n\r\n".encode() + big])
    chunked = f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + b"".join(
        f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (big[:3000], big[3000:])) + b"0\r\n\r\n"
    streamed, _ = raw_exchange(api.url, [chunked])
    assert status_of(declared) == status_of(streamed) == 413
    assert b"larger than 4096 bytes" in streamed


def test_a_trickled_body_is_408_at_its_deadline(edge: tuple[LocalApi, Keys]) -> None:
    api, keys = edge
    head = (f"POST /api/v1/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {keys.writer}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n").encode()
    answer, took = raw_exchange(api.url, [head, *[b" "] * 20], pause=0.3)
    assert status_of(answer) == 408 and took < 3  # WARREN_API_BODY_TIMEOUT=1, not 20 x 0.3 s


def test_trickled_headers_are_cut_off_at_their_deadline(edge: tuple[LocalApi, Keys]) -> None:
    api, _keys = edge
    answer, took = raw_exchange(api.url, [b"GET /healthz HTTP/1.1\r\n", *[b"X-Slow: 1\r\n"] * 20], pause=0.3)
    assert status_of(answer) == 408 and took < 3  # WARREN_API_HEADER_TIMEOUT=1
    _idle, took = raw_exchange(api.url, [b""], pause=0)
    assert took < 3  # a connection that says nothing is closed too


@pytest.mark.parametrize(("body", "content_type"), [
    (b'{"type": "email", "recipient": "a@b.co", "content": "\\ud800"}', "application/json"),  # a lone surrogate
    (b'{"type": "email", "recipient": "a@b.co", "content": "\xff\xfe"}', "application/json"),  # not UTF-8
    (b"{not json", "application/json"),
    (b"[" * 2000 + b"]" * 2000, "application/json"),  # nested deep
    (b'{"type": "email", "recipient": "a@b.co", "content": 5}', "application/json"),  # a wrong type
    (b'{"type": "email", "recipient": "a@b.co", "content": "hi"}', "text/plain"),
    (b'{"type": "email", "recipient": "a@b.co", "content": "\\ud800", "x": "\xff"}', "text/plain"),
], ids=["lone-surrogate", "not-utf8", "not-json", "nested-deep", "wrong-type", "text-plain", "text-plain-garbage"])
def test_every_malformed_body_is_422(edge: tuple[LocalApi, Keys], body: bytes, content_type: str) -> None:
    api, keys = edge
    status, answer = raw_post(api, "/api/v1/notifications/send", body,
                              {"content-type": content_type, **bearer(keys.writer)})
    assert status == 422 and answer["detail"]


def test_the_template_bomb_is_422_and_costs_at_most_the_cap(edge: tuple[LocalApi, Keys]) -> None:
    api, keys = edge
    bomb = {**NOTE, "content": "{{a}}" * 500, "variables": {"a": "{{b}}" * 10, "b": "{{a}}" * 10}}
    status, answer = api.call("POST", "/api/v1/notifications/send", bomb, headers=bearer(keys.writer))
    assert status == 422 and "over the limit of 20000" in json.dumps(answer)
    wide = {**NOTE, "content": "{{a}}" * 30, "variables": {"a": "x" * 1000}}
    assert api.call("POST", "/api/v1/notifications/send", wide, headers=bearer(keys.writer))[0] == 422
    many = {**NOTE, "variables": {f"v{n}": "x" for n in range(51)}}
    assert api.call("POST", "/api/v1/notifications/send", many, headers=bearer(keys.writer))[0] == 422


def test_lines_of_one_sku_over_the_bound_are_422(edge: tuple[LocalApi, Keys]) -> None:
    api, keys = edge
    order = {**ORDER, "items": [{"sku": "sku-tea", "quantity": 60}, {"sku": "sku-tea", "quantity": 41}]}
    status, answer = api.call("POST", "/api/v1/orders", order, headers=bearer(keys.writer))
    assert status == 422 and "add up to 101 units" in json.dumps(answer)


def test_without_keys_the_api_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARREN_API_")}
    done = subprocess.run([sys.executable, "-m", "warren_shop", "api"], capture_output=True, text=True, timeout=60,
                          env={**env, "PYTHONPATH": child_python_path({}),
                               "WARREN_SHOP_DATABASE_URL": f"sqlite:///{tmp_path / 'shop.sqlite'}"}, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "warren-shop: no API keys: set WARREN_API_KEYS_FILE to a file of keys (`NAME SCOPES KEY` lines), or "
        "WARREN_API_AUTH=none to serve without authentication (local development only)"]
