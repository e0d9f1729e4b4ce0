"""A WorkerAutoscaler's spec: the model reads the CRD's own fields, fills the policy's defaults, and
names the field at fault, as the CRD spells it, in one line."""

from __future__ import annotations

import copy
from types import MappingProxyType
from typing import Any

import pytest

from warren_operator.policy import DEFAULT_SCALE_DOWN, DEFAULT_SCALE_UP, BacklogTarget, Behavior, DrainTarget, Spec
from warren_operator.spec import SpecError, parse_spec

SECRET = {"name": "rabbitmq-management"}
FULL: dict[str, Any] = {
    "targetRef": {"name": "payments-worker"}, "queue": "warren.payments", "vhost": "shop",
    "minReplicas": 0, "maxReplicas": 20, "activationMessages": 5, "target": {"drainSeconds": 30},
    "prefetch": 4, "pollSeconds": 5,
    "scaleUp": {"stabilizationSeconds": 0, "maxStep": 4},
    "scaleDown": {"stabilizationSeconds": 120, "maxStep": None},
    "managementUrl": "http://warren@rabbitmq:15672",
    "managementSecretRef": {"name": "rabbitmq", "urlKey": "u", "usernameKey": "n", "passwordKey": "p"},
}
MINIMAL: dict[str, Any] = {"targetRef": {"name": "w"}, "queue": "q", "maxReplicas": 3,
                           "target": {"messagesPerReplica": 50}, "managementSecretRef": SECRET}


def test_parse_a_full_spec() -> None:
    parsed = parse_spec(FULL)
    assert parsed.policy() == Spec(
        deployment="payments-worker", queue="warren.payments", min_replicas=0, max_replicas=20,
        target=DrainTarget(30.0), activation_messages=5, prefetch=4, poll_seconds=5.0,
        scale_up=Behavior(0.0, 4), scale_down=Behavior(120.0, None))
    assert (parsed.vhost, parsed.management_url) == ("shop", "http://warren@rabbitmq:15672")
    ref = parsed.management_secret_ref
    assert (ref.name, ref.url_key, ref.username_key, ref.password_key) == ("rabbitmq", "u", "n", "p")


def test_parse_fills_the_defaults() -> None:
    parsed = parse_spec(MINIMAL)
    assert parsed.policy() == Spec(
        deployment="w", queue="q", min_replicas=1, max_replicas=3, target=BacklogTarget(50),
        activation_messages=1, prefetch=1, poll_seconds=5.0,
        scale_up=DEFAULT_SCALE_UP, scale_down=DEFAULT_SCALE_DOWN)
    assert (parsed.vhost, parsed.management_url) == ("/", None)
    ref = parsed.management_secret_ref
    assert (ref.url_key, ref.username_key, ref.password_key) == ("url", "username", "password")


def test_a_direction_keeps_its_default_window_when_only_its_step_is_given() -> None:
    spec = parse_spec({**MINIMAL, "scaleDown": {"maxStep": 2}}).policy()
    assert spec.scale_down == Behavior(DEFAULT_SCALE_DOWN.stabilization_seconds, 2)


def test_parse_does_not_mutate_its_input() -> None:
    before = copy.deepcopy(FULL)
    frozen = MappingProxyType({**FULL, "scaleUp": MappingProxyType(FULL["scaleUp"])})
    parse_spec(frozen)  # a read-only mapping, as kopf gives: any write would raise
    parse_spec(FULL)
    assert before == FULL


def without(key: str) -> dict[str, object]:
    return {k: v for k, v in MINIMAL.items() if k != key}


@pytest.mark.parametrize(
    ("spec", "field", "problem"),
    [
        # the Deployment, the queue and the Secret are required
        (without("targetRef"), "targetRef", "Field required"),
        ({**MINIMAL, "targetRef": {}}, "targetRef.name", "Field required"),
        ({**MINIMAL, "queue": ""}, "queue", "at least 1 character"),
        (without("managementSecretRef"), "managementSecretRef", "Field required"),
        # an upper bound is required: no unbounded scaling by default
        (without("maxReplicas"), "maxReplicas", "Field required"),
        # max below min (min's default counts too)
        ({**MINIMAL, "minReplicas": 4}, "maxReplicas", "at least minReplicas (4), got 3"),
        ({**MINIMAL, "maxReplicas": 0}, "maxReplicas", "greater than or equal to 1"),
        # negative min
        ({**MINIMAL, "minReplicas": -1}, "minReplicas", "greater than or equal to 0"),
        # exactly one target: none
        (without("target"), "target", "Field required"),
        ({**MINIMAL, "target": {}}, "target", "exactly one of messagesPerReplica and drainSeconds"),
        # exactly one target: both
        ({**MINIMAL, "target": {"messagesPerReplica": 50, "drainSeconds": 30}}, "target", "exactly one"),
        # zero messages per replica would divide by zero
        ({**MINIMAL, "target": {"messagesPerReplica": 0}}, "target.messagesPerReplica", "greater than or equal to 1"),
        # a drain time of zero cannot be met
        ({**MINIMAL, "target": {"drainSeconds": 0}}, "target.drainSeconds", "greater than or equal to 1"),
        # under a second is shorter than any poll
        ({**MINIMAL, "target": {"drainSeconds": 0.5}}, "target.drainSeconds", "greater than or equal to 1"),
        # booleans are not numbers, whatever Python thinks
        ({**MINIMAL, "prefetch": True}, "prefetch", "valid integer"),
        ({**MINIMAL, "maxReplicas": 3.0}, "maxReplicas", "valid integer"),
        # a string where a number belongs
        ({**MINIMAL, "pollSeconds": "5s"}, "pollSeconds", "valid number"),
        ({**MINIMAL, "pollSeconds": 0}, "pollSeconds", "greater than 0"),
        ({**MINIMAL, "pollSeconds": float("inf")}, "pollSeconds", "finite number"),
        # an activation threshold of 0 would wake on an empty queue
        ({**MINIMAL, "activationMessages": 0}, "activationMessages", "greater than or equal to 1"),
        # a typo is caught, not ignored
        ({**MINIMAL, "maxReplica": 3}, "maxReplica", "Extra inputs are not permitted"),
        # the old names are typos now
        ({**MINIMAL, "pollIntervalSeconds": 5}, "pollIntervalSeconds", "Extra inputs are not permitted"),
        # nested fields are named with their path
        ({**MINIMAL, "scaleDown": {"stabilizationSeconds": -5}}, "scaleDown.stabilizationSeconds",
         "greater than or equal to 0"),
        ({**MINIMAL, "scaleUp": {"maxStep": 0}}, "scaleUp.maxStep", "greater than or equal to 1"),
        ({**MINIMAL, "scaleUp": {"maxstep": 2}}, "scaleUp.maxstep", "Extra inputs are not permitted"),
        ({**MINIMAL, "scaleUp": 4}, "scaleUp", "must be an object"),
        ({**MINIMAL, "managementSecretRef": {"name": "s", "urlKey": ""}}, "managementSecretRef.urlKey",
         "at least 1 character"),
    ],
)
def test_parse_names_the_field_at_fault(spec: dict[str, object], field: str, problem: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec(spec)
    assert raised.value.field == field
    assert str(raised.value).startswith(f"spec.{field}: ")
    assert problem in str(raised.value)
    assert "\n" not in str(raised.value)


def test_every_problem_is_named_in_one_line() -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec({**MINIMAL, "queue": "", "prefetch": 0})
    assert str(raised.value) == ("spec.queue: String should have at least 1 character; "
                                 "spec.prefetch: Input should be greater than or equal to 1")


def test_a_spec_that_is_not_an_object() -> None:
    with pytest.raises(SpecError, match=r"^spec: must be an object$"):
        parse_spec([])  # type: ignore[arg-type]
