"""Types that carry a secret: every URL that may hold a password is masked in every dump of the spec.

Why a type and not a list of fields: masking follows the *type*, so a new URL field declared :data:`SecretUrl`
cannot leak however the spec is dumped (``validate``'s output, the study's ``spec`` attribute, exported specs).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, PlainSerializer, SerializationInfo

from hft_search.urls import mask_url, storage_url_problem

REVEAL_SECRETS = "reveal_secrets"
"""``model_dump(context={REVEAL_SECRETS: True})`` keeps passwords; only :meth:`StudySpec.to_yaml` asks for it."""


def _masked(value: Any, info: SerializationInfo) -> Any:
    """``value`` with the password of every URL in it masked, unless the dump asked to reveal secrets."""
    if (info.context or {}).get(REVEAL_SECRETS):
        return value
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, Mapping):
        return {key: _masked(item, info) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(item, info) for item in value]
    return value


MASKED = PlainSerializer(_masked, when_used="always")
"""Serializer of secret-bearing fields: every ``model_dump`` of the spec (``validate``'s output, the study's
``spec`` attribute, exported specs, ``hft_search.json``) shows ``***`` for the password. Masking follows the
*type*, so a new URL field declared :data:`SecretUrl` cannot leak however the spec is dumped."""


def _check_storage_url(url: str) -> str:
    """``url`` unchanged when ``run`` can open it; a validation error naming the problem otherwise."""
    problem = storage_url_problem(url)
    if problem is not None:
        raise ValueError(problem)
    return url


SecretUrl = Annotated[str, MASKED]
"""A URL that may carry a password. Every URL-valued field of the spec has this type (or :data:`StorageUrl`)."""
StorageUrl = Annotated[SecretUrl, AfterValidator(_check_storage_url)]
"""A study storage URL: secret, and of a kind ``run`` can open (no ``mysql://``, no in-memory SQLite)."""
