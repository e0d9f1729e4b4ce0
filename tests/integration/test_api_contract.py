"""The API's OpenAPI document against the real API: schemathesis generates requests for the
shop's endpoints (valid and invalid, with an API key) and checks that none is answered 5xx and
every answer's status, content type and body are the ones the document lists. The API runs as a
process on a real broker, with an inventory worker answering its stock checks."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from tests.support.database import fresh_sqlite_url
from tests.support.shop import Shop

pytestmark = pytest.mark.broker
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance]


@pytest.fixture(scope="module")
def contract_shop(broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    work_dir = tmp_path_factory.mktemp("contract")
    shop = Shop({"WARREN_BROKER_URL": broker.amqp_url, "WARREN_NAMESPACE": f"c{secrets.token_hex(4)}"}, work_dir,
                database_url=fresh_sqlite_url(work_dir))
    try:
        shop.start(("inventory",))
        shop.start_api()
        yield shop
    finally:
        shop.stop()


@pytest.fixture(scope="module")
def api_schema(contract_shop: Shop) -> Any:
    assert contract_shop.api is not None
    schema = schemathesis.openapi.from_url(f"{contract_shop.api.url}/openapi.json")
    return schema.include(path_regex=r"^/(api/v1/|healthz|readyz)")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_answer_is_in_the_openapi_document_and_none_is_5xx(case: Any, contract_shop: Shop) -> None:
    api = contract_shop.api
    assert api is not None and api.key is not None
    case.call_and_validate(base_url=api.url, headers={"Authorization": f"Bearer {api.key}"}, checks=CHECKS,
                           timeout=15)
