"""Access tokens as the Graph API checks them: a token must exist (190) and be one of the phone
number's or WABA's own (190, "no access to this object"); an unknown object id is error 100."""

from __future__ import annotations

from collections import defaultdict

from .config import PhoneNumberConfig, WabaConfig
from .errors import GraphError


class AccessTokens:
    def __init__(self, wabas: list[WabaConfig], numbers: list[PhoneNumberConfig]) -> None:
        self._tokens: dict[str, set[str]] = defaultdict(set)  # phone number or WABA id -> tokens
        owners: list[tuple[str, str | None]] = [(w.id, w.access_token()) for w in wabas]
        owners += [(p.id, p.access_token()) for p in numbers]
        for object_id, tok in owners:
            if tok:
                self._tokens[object_id].add(tok)
        self._all_tokens = set().union(*self._tokens.values()) if self._tokens else set()

    def check(self, authorization: str | None, object_ids: tuple[str, ...]) -> None:
        token = None
        if authorization and authorization.lower().startswith("bearer "):
            token = authorization[7:].strip()
        if not token or token not in self._all_tokens:
            raise GraphError(190, "Invalid OAuth access token")
        if object_ids and not any(token in self._tokens.get(oid, ()) for oid in object_ids):
            raise GraphError(
                190,
                "The access token is not valid for this object",
                message="Invalid OAuth access token - the token has no access to this object",
            )


def unknown_object(object_id: str) -> GraphError:
    return GraphError(
        100,
        f"Unsupported post request. Object with ID '{object_id}' does not exist, "
        "cannot be loaded due to missing permissions, or does not support this operation.",
        error_type="GraphMethodException",
    )
