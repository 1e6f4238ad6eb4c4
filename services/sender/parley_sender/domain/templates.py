"""Message templates: the per-tenant catalogue, validation of a send against it, and a preview.

Shapes follow Meta's message template API: a template has a name, a language,
a category (MARKETING, UTILITY, AUTHENTICATION), a status (only APPROVED may be sent), a
``parameter_format`` (POSITIONAL ``{{1}}`` or NAMED ``{{first_name}}``) and components (HEADER,
BODY, FOOTER, BUTTONS). A send names the template and gives parameters per component.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

VARIABLE = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")

HEADER_TEXT_MAX = 60
BODY_MAX = 1024
FOOTER_MAX = 60
URL_MAX = 2000
COPY_CODE_MAX = 20
MEDIA_FORMATS = frozenset({"IMAGE", "VIDEO", "DOCUMENT"})
# Meta refuses body parameters with new lines, tabs or more than four consecutive spaces.
_BAD_BODY_PARAM = re.compile(r"[\n\t]| {5,}")

APPROVED = "APPROVED"


@dataclass(frozen=True)
class Template:
    """One template in one language, as the catalogue knows it."""

    name: str
    language: str
    category: str  # MARKETING | UTILITY | AUTHENTICATION (as Meta spells it)
    status: str
    components: tuple[Mapping[str, Any], ...] = ()
    parameter_format: str = "POSITIONAL"
    quality: str | None = None
    template_id: str | None = None
    waba_id: str | None = None

    @classmethod
    def from_graph(cls, data: Mapping[str, Any], waba_id: str | None = None) -> Template:
        """From one element of Meta's ``GET /{waba}/message_templates`` ``data`` list."""
        quality = data.get("quality_score")
        return cls(
            name=str(data["name"]),
            language=str(data["language"]),
            category=str(data.get("category", "UTILITY")).upper(),
            status=str(data.get("status", "PENDING")).upper(),
            components=tuple(data.get("components") or ()),
            parameter_format=str(data.get("parameter_format") or "POSITIONAL").upper(),
            quality=(quality.get("score") if isinstance(quality, Mapping) else quality),
            template_id=str(data["id"]) if data.get("id") is not None else None,
            waba_id=waba_id,
        )

    @property
    def pricing_category(self) -> str:
        return self.category.lower()

    def component(self, kind: str) -> Mapping[str, Any] | None:
        for c in self.components:  # a plain loop: looked up several times per send
            t = c.get("type")
            if t is not None and str(t).upper() == kind:
                return c
        return None

    def buttons(self) -> list[Mapping[str, Any]]:
        comp = self.component("BUTTONS")
        return list(comp.get("buttons") or []) if comp else []

    @property
    def needs_phone_number(self) -> bool:
        """One-tap, zero-tap and copy-code authentication templates cannot go to a business-scoped
        user id (Meta answers 131062)."""
        return any(
            str(b.get("type", "")).upper() == "OTP" and str(b.get("otp_type", "")).upper() in PHONE_ONLY_OTP
            for b in self.buttons()
        )


PHONE_ONLY_OTP = frozenset({"ONE_TAP", "ZERO_TAP", "COPY_CODE"})


class TemplateProblem(ValueError):
    """Why a template send would be refused; ``code`` is the Meta error it would otherwise cause."""

    def __init__(self, reason: str, detail: str, code: int) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.code = code


def _variables(text: str | None) -> list[str]:
    return VARIABLE.findall(text or "")


def language_candidates(language: str, fallbacks: Mapping[str, Sequence[str]]) -> list[str]:
    """The requested language, its configured fallbacks, then its base language (``pt`` of ``pt_BR``)."""
    out = [language, *fallbacks.get(language, ())]
    base = language.split("_", 1)[0]
    if base not in out:
        out.append(base)
    return list(dict.fromkeys(out))


@dataclass
class TemplateCatalogue:
    """One tenant's templates keyed by (name, language)."""

    templates: dict[tuple[str, str], Template] = field(default_factory=dict)

    @classmethod
    def of(cls, templates: Iterable[Template]) -> TemplateCatalogue:
        return cls({(t.name, t.language): t for t in templates})

    def put(self, template: Template) -> None:
        self.templates[(template.name, template.language)] = template

    def find(
        self, name: str, language: str, fallbacks: Mapping[str, Sequence[str]] | None = None
    ) -> Template:
        """The template to send, with language fallback; raises TemplateProblem (132001) if absent."""
        for lang in language_candidates(language, fallbacks or {}):
            found = self.templates.get((name, lang))
            if found is not None:
                return found
        raise TemplateProblem(
            "template_missing", f"template {name!r} does not exist in {language!r} or its fallbacks", 132001
        )


def check_sendable(template: Template) -> None:
    status = template.status.upper()
    if status == APPROVED:
        return
    if status == "PAUSED":
        raise TemplateProblem("template_paused", f"template {template.name!r} is PAUSED", 132015)
    if status == "DISABLED":
        raise TemplateProblem("template_disabled", f"template {template.name!r} is DISABLED", 132016)
    raise TemplateProblem(
        "template_not_approved", f"template {template.name!r} is {status}, not APPROVED", 132001
    )


def _component_params(components: Sequence[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    params: list[Mapping[str, Any]] = []
    for c in components:
        if str(c.get("type", "")).lower() == kind:
            params.extend(c.get("parameters") or [])
    return params


def _bind_text(
    template: Template, where: str, text: str | None, params: Sequence[Mapping[str, Any]]
) -> dict[str, str]:
    """Match parameters to the variables of ``text``; returns variable -> value."""
    names = _variables(text)
    if template.parameter_format == "NAMED":
        given: dict[str, str] = {}
        for p in params:
            pname = p.get("parameter_name")
            if not pname:
                raise TemplateProblem(
                    "parameter_format", f"{where}: named template needs parameter_name", 132012
                )
            given[str(pname)] = _param_text(p, where)
        expected = set(names)
        if set(given) != expected:
            missing, extra = sorted(expected - set(given)), sorted(set(given) - expected)
            raise TemplateProblem(
                "parameter_mismatch", f"{where}: missing {missing}, unexpected {extra}", 132000
            )
        return given
    if any(p.get("parameter_name") for p in params):
        raise TemplateProblem(
            "parameter_format", f"{where}: positional template takes no parameter_name", 132012
        )
    distinct = sorted(set(names), key=lambda n: int(n) if n.isdigit() else 0)
    if len(params) != len(distinct):
        raise TemplateProblem(
            "parameter_mismatch", f"{where}: expected {len(distinct)} parameters, got {len(params)}", 132000
        )
    return {str(i + 1): _param_text(p, where) for i, p in enumerate(params)}


_TEXT_KEYS = ("text", "payload", "coupon_code")


def _param_text(p: Mapping[str, Any], where: str) -> str:
    ptype = str(p.get("type", "text"))
    if ptype in ("currency", "date_time"):
        obj = p.get(ptype) or {}
        value = obj.get("fallback_value") if isinstance(obj, Mapping) else None
    else:
        value = next((p.get(k) for k in _TEXT_KEYS if p.get(k) is not None), None)
    if value is None or str(value) == "":
        raise TemplateProblem("parameter_empty", f"{where}: a {ptype} parameter has no value", 132000)
    return str(value)


def _render(text: str, values: Mapping[str, str]) -> str:
    return VARIABLE.sub(lambda m: values.get(m.group(1), m.group(0)), text)


@dataclass(frozen=True)
class RenderedTemplate:
    """What the customer will see."""

    header: str | None
    body: str
    footer: str | None
    buttons: tuple[str, ...]
    header_media: str | None = None  # IMAGE | VIDEO | DOCUMENT | LOCATION

    @property
    def text(self) -> str:
        parts = [p for p in (self.header, self.body, self.footer) if p]
        parts.extend(f"[{b}]" for b in self.buttons)
        return "\n".join(parts)


class TemplateRenderer:
    """Validates a send's parameters against a template and renders the final text."""

    def render(self, template: Template, components: Sequence[Mapping[str, Any]]) -> RenderedTemplate:
        known = {"header", "body", "button"}
        for c in components:
            if str(c.get("type", "")).lower() not in known:
                raise TemplateProblem("unknown_component", f"component type {c.get('type')!r}", 132000)
        header, media = self._header(template, components)
        body_c = template.component("BODY")
        body_text = str(body_c.get("text", "")) if body_c else ""
        body_params = _component_params(components, "body")
        values = _bind_text(template, "body", body_text, body_params)
        for p in body_params:
            if _BAD_BODY_PARAM.search(_param_text(p, "body")):
                raise TemplateProblem(
                    "parameter_format", "body: a parameter has a new line, a tab or over 4 spaces", 132012
                )
        body = _render(body_text, values)
        if len(body) > BODY_MAX:
            raise TemplateProblem("too_long", f"body: {len(body)} characters, limit {BODY_MAX}", 132005)
        footer_c = template.component("FOOTER")
        footer = str(footer_c.get("text")) if footer_c and footer_c.get("text") else None
        buttons = self._buttons(template, components)
        return RenderedTemplate(header, body, footer, tuple(buttons), media)

    def _header(
        self, template: Template, components: Sequence[Mapping[str, Any]]
    ) -> tuple[str | None, str | None]:
        comp = template.component("HEADER")
        params = _component_params(components, "header")
        if comp is None:
            if params:
                raise TemplateProblem("parameter_mismatch", "header: the template has no header", 132000)
            return None, None
        fmt = str(comp.get("format", "TEXT")).upper()
        if fmt == "TEXT":
            text = str(comp.get("text", ""))
            values = _bind_text(template, "header", text, params)
            rendered = _render(text, values)
            if len(rendered) > HEADER_TEXT_MAX:
                raise TemplateProblem(
                    "too_long", f"header: {len(rendered)} characters, limit {HEADER_TEXT_MAX}", 132005
                )
            return rendered, None
        if fmt in MEDIA_FORMATS or fmt == "LOCATION":
            kind = fmt.lower()
            if len(params) != 1 or str(params[0].get("type", "")).lower() != kind:
                raise TemplateProblem("header_media", f"header: needs one {kind} parameter", 132000)
            obj = params[0].get(kind)
            if not isinstance(obj, Mapping) or not (
                obj.get("link") or obj.get("id") or (kind == "location" and "latitude" in obj)
            ):
                raise TemplateProblem(
                    "header_media", f"header: the {kind} parameter needs a link or an id", 132012
                )
            return None, fmt
        raise TemplateProblem("unknown_component", f"header format {fmt!r}", 132000)

    def _buttons(self, template: Template, components: Sequence[Mapping[str, Any]]) -> list[str]:
        defined = template.buttons()
        given: dict[int, Mapping[str, Any]] = {}
        for c in components:
            if str(c.get("type", "")).lower() != "button":
                continue
            try:
                index = int(c.get("index", -1))
            except (TypeError, ValueError):
                index = -1
            if not 0 <= index < len(defined):
                raise TemplateProblem(
                    "button_mismatch", f"button index {c.get('index')!r} does not exist", 132000
                )
            if index in given:
                raise TemplateProblem("button_mismatch", f"button {index} given twice", 132000)
            given[index] = c
        labels: list[str] = []
        for i, b in enumerate(defined):
            btype = str(b.get("type", "")).upper()
            label = str(b.get("text", ""))
            comp = given.get(i)
            sub_type = str(comp.get("sub_type", "")).lower() if comp else None
            params = list(comp.get("parameters") or []) if comp else []
            if btype == "URL" and _variables(str(b.get("url", ""))):
                if comp is None or sub_type != "url" or len(params) != 1:
                    raise TemplateProblem(
                        "button_mismatch", f"button {i}: URL button needs one url parameter", 132000
                    )
                url = str(b.get("url", ""))
                suffix = quote(_param_text(params[0], f"button {i}"), safe="/?=&%")
                rendered_url = VARIABLE.sub(suffix.replace("\\", r"\\"), url)  # a literal replacement
                if len(rendered_url) > URL_MAX:
                    raise TemplateProblem("too_long", f"button {i}: URL over {URL_MAX} characters", 132005)
                labels.append(f"{label} → {rendered_url}")
            elif btype == "COPY_CODE" or (btype == "OTP" and comp is not None and sub_type == "url"):
                if comp is None or len(params) != 1:
                    raise TemplateProblem(
                        "button_mismatch", f"button {i}: {btype.lower()} needs one parameter", 132000
                    )
                code = _param_text(params[0], f"button {i}")
                if btype == "COPY_CODE" and len(code) > COPY_CODE_MAX:
                    raise TemplateProblem(
                        "too_long", f"button {i}: copy code over {COPY_CODE_MAX} characters", 132005
                    )
                labels.append(f"{label}: {code}" if label else code)
            else:
                if comp is not None and btype == "QUICK_REPLY" and sub_type not in (None, "quick_reply"):
                    raise TemplateProblem("button_mismatch", f"button {i}: is a quick reply", 132000)
                if comp is not None and btype not in ("QUICK_REPLY", "OTP", "FLOW", "CATALOG", "MPM"):
                    raise TemplateProblem("button_mismatch", f"button {i}: takes no parameters", 132000)
                labels.append(label)
        return labels


def validate_send(
    catalogue: TemplateCatalogue,
    name: str,
    language: str,
    components: Sequence[Mapping[str, Any]],
    fallbacks: Mapping[str, Sequence[str]] | None = None,
) -> tuple[Template, RenderedTemplate]:
    """Everything checked before a template send; raises TemplateProblem with the reason."""
    template = catalogue.find(name, language, fallbacks)
    check_sendable(template)
    return template, TemplateRenderer().render(template, components)
