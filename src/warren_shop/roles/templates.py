"""Notification templates: ``{{name}}`` placeholders filled from a notification's variables.

Rendering is one pass over the template: a substituted value is never scanned again, so a value
holding ``{{name}}`` stays as that text (no template bomb). What a template renders to is bounded
before anything is rendered: the size is a sum over the placeholders, so the API refuses (422) a
notification that would render past ``MAX_RENDERED_CHARS``, and a worker handed one anyway (a
producer that bypasses the API) dead-letters it as a schema violation without rendering it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from warren_shop.roles.common import EMAIL_PATTERN, PHONE_PATTERN, Strict

MAX_CONTENT_CHARS = 10_000
MAX_VARIABLES = 50
MAX_VALUE_CHARS = 1_000
MAX_RENDERED_CHARS = 20_000
NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
PLACEHOLDER = re.compile(r"\{\{([A-Za-z0-9_.-]{1,64})\}\}")

VariableName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
VariableValue = (Annotated[str, Field(max_length=MAX_VALUE_CHARS)] | bool
                 | Annotated[int, Field(ge=-(10**15), le=10**15)] | Annotated[float, Field(allow_inf_nan=False)])


class TemplateTooLarge(ValueError):
    """The template would render past the cap."""


def rendered_length(content: str, variables: Mapping[str, object]) -> int:
    """How long ``render`` would make ``content``, without rendering it."""
    length = len(content)
    for match in PLACEHOLDER.finditer(content):
        name = match.group(1)
        if name in variables:
            length += len(_text(variables[name])) - len(match.group(0))
    return length


def render(content: str, variables: Mapping[str, object], *, limit: int = MAX_RENDERED_CHARS) -> str:
    """``content`` with each known ``{{name}}`` replaced by its value, once; unknown ones kept."""
    size = rendered_length(content, variables)
    if size > limit:
        raise TemplateTooLarge(f"the notification would render to {size} characters, over the limit of {limit}")
    return PLACEHOLDER.sub(lambda m: _text(variables[m.group(1)]) if m.group(1) in variables else m.group(0),
                           content)


def _text(value: object) -> str:
    return str(value)


class NotificationBody(Strict):
    """What a notification says and to whom: the API's request and the queue message share it."""

    type: Literal["email", "sms"]
    recipient: str = Field(min_length=3, max_length=254)
    content: str = Field(min_length=1, max_length=MAX_CONTENT_CHARS)
    variables: dict[VariableName, VariableValue] = Field(default_factory=dict, max_length=MAX_VARIABLES)

    @model_validator(mode="after")
    def _renders_within_the_cap(self) -> NotificationBody:
        size = rendered_length(self.content, self.variables)
        if size > MAX_RENDERED_CHARS:
            raise ValueError(f"the notification would render to {size} characters, over the limit of "
                             f"{MAX_RENDERED_CHARS}")
        return self

    @model_validator(mode="after")
    def _recipient_fits_the_channel(self) -> NotificationBody:
        pattern = EMAIL_PATTERN if self.type == "email" else PHONE_PATTERN
        if not re.match(pattern, self.recipient):
            raise ValueError(f"recipient is not a valid {'e-mail address' if self.type == 'email' else 'phone number'}")
        return self
