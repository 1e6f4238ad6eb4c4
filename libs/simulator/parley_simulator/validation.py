"""Validation of a send request body the way the Graph API does it (pure, no I/O).

Structural problems answer code 100 (invalid parameter) with a ``details`` text naming the
field; template problems answer 132000 (parameter count), 132012 (parameter format).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .config import TemplateConfig
from .errors import GraphError

TEXT_BODY_MAX = 4096
INTERACTIVE_BODY_MAX = 1024
REPLY_BUTTONS_MAX = 3
REPLY_BUTTON_TITLE_MAX = 20
LIST_ROWS_MAX = 10
LIST_SECTIONS_MAX = 10
MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")
FREE_FORM_TYPES = (*MEDIA_TYPES, "text", "interactive", "location", "contacts", "reaction")
SUPPORTED_TYPES = (*FREE_FORM_TYPES, "template")
INTERACTIVE_TYPES = (
    "button",
    "list",
    "cta_url",
    "flow",
    "product",
    "product_list",
    "location_request_message",
    "address_message",
    "voice_call",
    "order_details",
    "order_status",
    "catalog_message",
)
# Commerce messages that Meta refuses without a body text.
_BODY_REQUIRED = ("button", "list", "order_details", "order_status", "product_list", "catalog_message")

_VARIABLE = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")
_BSUID = re.compile(r"[A-Z]{2}\.(?:ENT\.)?[A-Za-z0-9]{1,128}")  # a parent BSUID has ENT.
PHONE_ONLY_OTP = frozenset({"ONE_TAP", "ZERO_TAP", "COPY_CODE"})
_NON_DIGITS = re.compile(r"\D")


@dataclass(frozen=True)
class SendRequest:
    """What the simulator needs from a valid send body."""

    to: str
    type: str
    body: dict[str, Any]
    template_name: str | None = None
    template_language: str | None = None
    template_components: list[dict[str, Any]] = field(default_factory=list)
    biz_opaque_callback_data: str | None = None
    context_message_id: str | None = None
    by_user_id: bool = False  # addressed with ``recipient`` (a BSUID), not ``to``

    @property
    def is_template(self) -> bool:
        return self.type == "template"


def _invalid(details: str) -> GraphError:
    return GraphError(100, details)


def _require_dict(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(f"Param {name} must be a JSON object")
    return value


def _require_str(obj: dict[str, Any], key: str, name: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _invalid(f"Param {name} is required")
    return value


def normalise_recipient(to: str) -> str:
    """The wa_id Meta answers for an input: digits only (a BSUID ``CC.<id>`` is kept as is)."""
    if to.isdigit():
        return to
    if _BSUID.fullmatch(to):
        return to
    return _NON_DIGITS.sub("", to)


def needs_phone_number(components: list[dict[str, Any]]) -> bool:
    """One-tap, zero-tap and copy-code authentication templates cannot go to a BSUID (131062)."""
    for c in components:
        if str(c.get("type", "")).upper() == "BUTTONS":
            for b in c.get("buttons") or []:
                if str(b.get("type", "")).upper() == "OTP" and str(b.get("otp_type", "")).upper() in PHONE_ONLY_OTP:
                    return True
    return False


def parse_send(body: Any) -> SendRequest:
    body = _require_dict(body, "body")
    if body.get("messaging_product") != "whatsapp":
        raise _invalid("The parameter messaging_product is required and must be 'whatsapp'")
    recipient_type = body.get("recipient_type", "individual")
    if recipient_type not in ("individual", "group"):
        raise _invalid("Param recipient_type must be one of {INDIVIDUAL, GROUP}")
    # ``to`` takes a phone number, ``recipient`` a business-scoped user id; with both, ``to`` wins.
    by_user_id = "to" not in body and "recipient" in body
    to = body.get("recipient") if by_user_id else body.get("to")
    if not isinstance(to, str) or not to.strip():
        raise _invalid("The parameter to is required.")
    if by_user_id and not _BSUID.fullmatch(to):
        raise _invalid("Param recipient is not a business-scoped user id")
    if not by_user_id and (_BSUID.fullmatch(to) or not normalise_recipient(to)):
        raise _invalid("Param to is not a valid phone number")
    msg_type = body.get("type", "text")
    if msg_type not in SUPPORTED_TYPES:
        raise _invalid(f"Param type must be one of {{{', '.join(t.upper() for t in SUPPORTED_TYPES)}}}")
    if msg_type not in body:
        raise _invalid(f"Param {msg_type} is required for type {msg_type}")
    payload = _require_dict(body[msg_type], msg_type)
    opaque = body.get("biz_opaque_callback_data")
    if opaque is not None and (not isinstance(opaque, str) or len(opaque) > 512):
        raise _invalid("Param biz_opaque_callback_data must be a string of at most 512 characters")
    context_id = None
    if "context" in body:
        context = _require_dict(body["context"], "context")
        context_id = _require_str(context, "message_id", "context['message_id']")

    if msg_type == "text":
        text = payload.get("body")
        if not isinstance(text, str) or not text:
            raise _invalid("Param text['body'] is required")
        if len(text) > TEXT_BODY_MAX:
            raise _invalid(f"Param text['body'] must be at most {TEXT_BODY_MAX} characters long")
    elif msg_type == "interactive":
        _check_interactive(payload)
    elif msg_type in MEDIA_TYPES:
        if not payload.get("id") and not payload.get("link"):
            raise _invalid(f"Param {msg_type} must have either 'id' or 'link'")
    elif msg_type == "location":
        for key in ("latitude", "longitude"):
            if not isinstance(payload.get(key), int | float | str):
                raise _invalid(f"Param location['{key}'] is required")
    elif msg_type == "reaction":
        _require_str(payload, "message_id", "reaction['message_id']")
        if "emoji" not in payload:
            raise _invalid("Param reaction['emoji'] is required")
    # "contacts": Meta's contact cards are open-ended; any object list is passed through unchecked.
    elif msg_type == "template":
        name = _require_str(payload, "name", "template['name']")
        language = _require_dict(payload.get("language"), "template['language']")
        code = _require_str(language, "code", "template['language']['code']")
        components = payload.get("components", [])
        if not isinstance(components, list) or not all(isinstance(c, dict) for c in components):
            raise _invalid("Param template['components'] must be an array of objects")
        return SendRequest(
            to=to,
            type=msg_type,
            body=body,
            template_name=name,
            template_language=code,
            template_components=components,
            biz_opaque_callback_data=opaque,
            context_message_id=context_id,
            by_user_id=by_user_id,
        )
    return SendRequest(
        to=to,
        type=msg_type,
        body=body,
        biz_opaque_callback_data=opaque,
        context_message_id=context_id,
        by_user_id=by_user_id,
    )


def _check_interactive(payload: dict[str, Any]) -> None:
    kind = payload.get("type")
    if kind not in INTERACTIVE_TYPES:
        raise _invalid(f"Param interactive['type'] must be one of {{{', '.join(INTERACTIVE_TYPES)}}}")
    action = _require_dict(payload.get("action"), "interactive['action']")
    if kind in _BODY_REQUIRED:
        body = _require_dict(payload.get("body"), "interactive['body']")
        text = _require_str(body, "text", "interactive['body']['text']")
        if len(text) > INTERACTIVE_BODY_MAX:
            raise _invalid(
                f"Param interactive['body']['text'] must be at most {INTERACTIVE_BODY_MAX} characters"
            )
    if kind in ("order_details", "order_status"):
        params = _require_dict(action.get("parameters"), "interactive['action']['parameters']")
        _require_str(params, "reference_id", "interactive['action']['parameters']['reference_id']")
        if kind == "order_details":
            total = _require_dict(params.get("total_amount"), "interactive['action']['parameters']['total_amount']")
            if not isinstance(total.get("value"), int) or not isinstance(total.get("offset"), int):
                raise _invalid("Param interactive['action']['parameters']['total_amount'] needs integer "
                               "value and offset")
            _require_str(params, "currency", "interactive['action']['parameters']['currency']")
    elif kind in ("product", "product_list"):
        _require_str(action, "catalog_id", "interactive['action']['catalog_id']")
    if kind == "button":
        buttons = action.get("buttons")
        if not isinstance(buttons, list) or not buttons:
            raise _invalid("Param interactive['action']['buttons'] is required")
        if len(buttons) > REPLY_BUTTONS_MAX:
            raise _invalid(
                f"Param interactive['action']['buttons'] must have at most {REPLY_BUTTONS_MAX} elements"
            )
        ids: set[str] = set()
        for i, button in enumerate(buttons):
            button = _require_dict(button, f"interactive['action']['buttons'][{i}]")
            if button.get("type") != "reply":
                raise _invalid(f"Param interactive['action']['buttons'][{i}]['type'] must be 'reply'")
            reply = _require_dict(button.get("reply"), f"interactive['action']['buttons'][{i}]['reply']")
            bid = _require_str(reply, "id", f"interactive['action']['buttons'][{i}]['reply']['id']")
            title = _require_str(reply, "title", f"interactive['action']['buttons'][{i}]['reply']['title']")
            if len(title) > REPLY_BUTTON_TITLE_MAX:
                raise _invalid(
                    f"Param interactive['action']['buttons'][{i}]['reply']['title'] must be at "
                    f"most {REPLY_BUTTON_TITLE_MAX} characters"
                )
            if bid in ids:
                raise _invalid("Buttons must have unique ids")
            ids.add(bid)
    elif kind == "list":
        _require_str(action, "button", "interactive['action']['button']")
        sections = action.get("sections")
        if not isinstance(sections, list) or not sections:
            raise _invalid("Param interactive['action']['sections'] is required")
        if len(sections) > LIST_SECTIONS_MAX:
            raise _invalid(
                f"Param interactive['action']['sections'] must have at most {LIST_SECTIONS_MAX} elements"
            )
        rows = sum(len(s.get("rows", [])) for s in sections if isinstance(s, dict))
        if rows == 0 or rows > LIST_ROWS_MAX:
            raise _invalid(f"Total row count must be between 1 and {LIST_ROWS_MAX}")


# --- templates ------------------------------------------------------------------------------


def _variables(text: str) -> list[str]:
    return _VARIABLE.findall(text or "")


def expected_parameters(template: TemplateConfig) -> dict[str, list[str]]:
    """Per sendable component key (``header``, ``body``, ``button:<index>``): the template variables."""
    expected: dict[str, list[str]] = {}
    for comp in template.components:
        ctype = str(comp.get("type", "")).upper()
        if ctype == "HEADER":
            fmt = str(comp.get("format", "TEXT")).upper()
            if fmt == "TEXT":
                names = _variables(comp.get("text", ""))
                if names:
                    expected["header"] = names
            elif fmt in ("IMAGE", "VIDEO", "DOCUMENT", "LOCATION"):
                expected["header"] = [fmt.lower()]
        elif ctype == "BODY":
            names = _variables(comp.get("text", ""))
            if names:
                expected["body"] = names
        elif ctype == "BUTTONS":
            for index, button in enumerate(comp.get("buttons", [])):
                btype = str(button.get("type", "")).upper()
                if btype == "URL":
                    names = _variables(button.get("url", ""))
                    if names:
                        expected[f"button:{index}"] = names
                elif btype == "COPY_CODE":
                    expected[f"button:{index}"] = ["coupon_code"]
    return expected


def check_template_parameters(template: TemplateConfig, components: list[dict[str, Any]]) -> None:
    """Raise 132000 / 132012 / 100 when the sent components do not fit the template."""
    expected = expected_parameters(template)
    sent: dict[str, list[dict[str, Any]]] = {}
    for comp in components:
        ctype = str(comp.get("type", "")).lower()
        params = comp.get("parameters", [])
        if not isinstance(params, list):
            raise _invalid(f"Param template['components']['{ctype}']['parameters'] must be an array")
        if ctype == "button":
            key = f"button:{comp.get('index', '')}"
        elif ctype in ("header", "body"):
            key = ctype
        else:
            raise _invalid(f"Param template['components'][]['type'] has an unknown value {ctype!r}")
        sent[key] = params
    for key in sorted(set(expected) | set(sent)):
        want = expected.get(key, [])
        got = sent.get(key, [])
        label = key.split(":")[0]
        if len(want) != len(got):
            raise GraphError(
                132000,
                f"{label}: number of localizable_params ({len(got)}) does not match "
                f"the expected number of params ({len(want)})",
            )
        if key == "header" and want and want[0] in ("image", "video", "document", "location"):
            if got[0].get("type") != want[0]:
                raise GraphError(
                    132012,
                    f"header: Format mismatch, expected {want[0].upper()}, "
                    f"received {str(got[0].get('type', '')).upper()}",
                )
            continue
        if template.parameter_format == "named" and label in ("header", "body"):
            names = [p.get("parameter_name") for p in got]
            if any(n is None for n in names) or sorted(map(str, names)) != sorted(want):
                raise GraphError(
                    132012,
                    f"{label}: parameter names {names} do not match the template's named parameters {want}",
                )
        elif label in ("header", "body") and any(p.get("parameter_name") for p in got):
            raise GraphError(
                132012, f"{label}: the template uses positional parameters; parameter_name must not be set"
            )
        for p in got:
            if p.get("type", "text") == "text" and not str(p.get("text", "")).strip():
                raise _invalid(f"{label}: parameter text is required")
