"""A WorkerAutoscaler's spec, validated by a pydantic model that spells it as the CRD does.

The CRD (``charts/warren/crds/workerautoscaler.yaml``) is the contract: each model here is one of
its objects, each field one of its fields (``to_camel`` of the Python name), each bound a ``Field``
constraint, so the operator needs no translation table and its messages name the field the user
wrote (``spec.target.drainSeconds: ...``). The operator checks again what the API server checked,
because a spec can reach it unchecked (an older CRD, a test's API emulator), and is stricter where
the CRD is looser: a drain time of at least a second, no number that is infinite or a boolean.

Fields the policy has defaults for are None when left out: ``policy()`` gives the ``policy.Spec``,
where those defaults live. The other defaults (``vhost``, the Secret's keys) are here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from warren_operator.policy import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    BacklogTarget,
    Behavior,
    DrainTarget,
    Spec,
    Target,
)


class SpecError(ValueError):
    """A WorkerAutoscaler spec that cannot be used; ``field`` names the offending field as the CRD
    does, relative to ``spec`` (``target.drainSeconds``; empty for the spec as a whole)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"spec.{field}: {problem}" if field else f"spec: {problem}")
        self.field = field
        self.problem = problem


class _CrdObject(BaseModel):
    # Lax, so that any Mapping validates (kopf hands over a read-only view); the numbers are strict.
    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", frozen=True, allow_inf_nan=False)


class TargetRef(_CrdObject):
    name: str = Field(min_length=1)  # the Deployment to scale, in the WorkerAutoscaler's namespace


class ScalingTarget(_CrdObject):
    """Exactly one of the two ways to size the Deployment."""

    messages_per_replica: StrictInt | None = Field(None, ge=1)
    drain_seconds: StrictFloat | None = Field(None, ge=1)  # under a second is shorter than any poll

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.messages_per_replica is None) == (self.drain_seconds is None):
            raise ValueError("set exactly one of messagesPerReplica and drainSeconds")
        return self

    def policy(self) -> Target:
        if self.messages_per_replica is not None:
            return BacklogTarget(self.messages_per_replica)
        assert self.drain_seconds is not None  # _exactly_one
        return DrainTarget(self.drain_seconds)


class ScalingBehavior(_CrdObject):
    """``scaleUp`` or ``scaleDown``; what is left out is the direction's default."""

    stabilization_seconds: StrictFloat | None = Field(None, ge=0)
    max_step: StrictInt | None = Field(None, ge=1)  # None: no limit

    def policy(self, default: Behavior) -> Behavior:
        return Behavior(
            stabilization_seconds=default.stabilization_seconds if self.stabilization_seconds is None
            else self.stabilization_seconds,
            max_step=self.max_step)


class ManagementSecretRef(_CrdObject):
    """The Secret with the management API's credentials, and which of its keys hold what."""

    name: str = Field(min_length=1)
    url_key: str = Field("url", min_length=1)
    username_key: str = Field("username", min_length=1)
    password_key: str = Field("password", min_length=1)


class WorkerAutoscalerSpec(_CrdObject):
    """The ``spec`` of a WorkerAutoscaler (``parse_spec`` validates one)."""

    target_ref: TargetRef
    queue: str = Field(min_length=1)
    vhost: str = "/"
    min_replicas: StrictInt | None = Field(None, ge=0)
    max_replicas: StrictInt = Field(ge=1)
    activation_messages: StrictInt | None = Field(None, ge=1)
    target: ScalingTarget
    prefetch: StrictInt | None = Field(None, ge=1)
    poll_seconds: StrictFloat | None = Field(None, gt=0)
    scale_up: ScalingBehavior = ScalingBehavior()
    scale_down: ScalingBehavior = ScalingBehavior()
    management_url: str | None = Field(None, min_length=1)  # see credentials
    management_secret_ref: ManagementSecretRef

    @model_validator(mode="after")
    def _max_not_below_min(self) -> Self:
        spec = self.policy()
        if spec.max_replicas < spec.min_replicas:
            raise SpecError("maxReplicas", f"must be at least minReplicas ({spec.min_replicas}), "
                                           f"got {spec.max_replicas}")
        return self

    def policy(self) -> Spec:
        """What ``policy.decide`` needs of this spec, with the policy's defaults filled in."""
        given = self.model_dump(include={"min_replicas", "activation_messages", "prefetch", "poll_seconds"},
                                exclude_none=True)
        return Spec(deployment=self.target_ref.name, queue=self.queue, max_replicas=self.max_replicas,
                    target=self.target.policy(), scale_up=self.scale_up.policy(DEFAULT_SCALE_UP),
                    scale_down=self.scale_down.policy(DEFAULT_SCALE_DOWN), **given)


def parse_spec(spec: Mapping[str, object]) -> WorkerAutoscalerSpec:
    """The validated spec, or a ``SpecError`` naming the first field at fault (and saying the rest)."""
    try:
        return WorkerAutoscalerSpec.model_validate(spec)
    except ValidationError as e:
        raise _spec_error(e) from None


def _spec_error(error: ValidationError) -> SpecError:
    problems = []
    for problem in error.errors(include_url=False, include_input=False):
        path = [str(part) for part in problem["loc"]]
        cause = problem.get("ctx", {}).get("error")
        if isinstance(cause, SpecError):  # a rule across fields names the one it blames
            path, text = [*path, cause.field], cause.problem
        elif problem["type"] == "model_type":  # not "... or instance of ScalingBehavior"
            text = "must be an object"
        else:
            text = problem["msg"].removeprefix("Value error, ")
        problems.append((".".join(filter(None, path)), text))
    (field, first), rest = problems[0], problems[1:]
    return SpecError(field, first + "".join(f"; {SpecError(*other)}" for other in rest))
