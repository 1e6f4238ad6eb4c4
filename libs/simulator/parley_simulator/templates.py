"""Message templates per WABA: the catalogue the send path checks and the Graph API lists."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

from .config import TemplateConfig
from .errors import GraphError

NAME_RE = re.compile(r"^[a-z0-9_]{1,512}$")
CATEGORIES = ("MARKETING", "UTILITY", "AUTHENTICATION")
_ids = itertools.count(1_000_000_000_000_001)


@dataclass
class StoredTemplate:
    waba_id: str
    template: TemplateConfig

    @property
    def id(self) -> str:
        assert self.template.id is not None
        return self.template.id

    @property
    def status(self) -> str:
        return self.template.status

    def listing(self) -> dict[str, Any]:
        """The item shape of ``GET /{waba_id}/message_templates``."""
        t = self.template
        return {
            "name": t.name,
            "parameter_format": t.parameter_format.upper(),
            "components": t.components,
            "language": t.language,
            "status": t.status,
            "category": t.category,
            "id": self.id,
        }


class TemplateCatalogue:
    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str, str], StoredTemplate] = {}

    def add(self, waba_id: str, template: TemplateConfig) -> StoredTemplate:
        if template.id is None:
            template = template.model_copy(update={"id": str(next(_ids))})
        stored = StoredTemplate(waba_id, template)
        self._by_key[(waba_id, template.name, template.language)] = stored
        return stored

    def find(self, waba_id: str, name: str, language: str) -> StoredTemplate | None:
        return self._by_key.get((waba_id, name, language))

    def by_id(self, template_id: str) -> StoredTemplate | None:
        return next((t for t in self._by_key.values() if t.id == template_id), None)

    def list(
        self,
        waba_id: str,
        *,
        name: str | None = None,
        status: str | None = None,
        category: str | None = None,
        language: str | None = None,
    ) -> list[StoredTemplate]:
        items = [t for (w, _, _), t in self._by_key.items() if w == waba_id]
        if name:
            items = [t for t in items if name in t.template.name]
        if status:
            items = [t for t in items if t.status == status.upper()]
        if category:
            items = [t for t in items if t.template.category == category.upper()]
        if language:
            items = [t for t in items if t.template.language == language]
        return sorted(items, key=lambda t: t.id)

    def set_status(self, stored: StoredTemplate, status: str) -> None:
        stored.template = stored.template.model_copy(update={"status": status})


def parse_new_template(body: Any) -> TemplateConfig:
    """Validate ``POST /{waba_id}/message_templates`` like Meta (code 100 on a bad field)."""
    if not isinstance(body, dict):
        raise GraphError(100, "The request body must be a JSON object")
    name = body.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise GraphError(100, "Param name must be at most 512 characters of lowercase letters, digits and _")
    language = body.get("language")
    if not isinstance(language, str) or not language:
        raise GraphError(100, "Param language is required")
    category = str(body.get("category", "")).upper()
    if category not in CATEGORIES:
        raise GraphError(100, "Param category must be one of {MARKETING, UTILITY, AUTHENTICATION}")
    components = body.get("components")
    if not isinstance(components, list) or not all(isinstance(c, dict) for c in components):
        raise GraphError(100, "Param components is required and must be an array of objects")
    if not any(str(c.get("type", "")).upper() == "BODY" for c in components):
        raise GraphError(100, "A template requires a BODY component")
    for c in components:
        ctype = str(c.get("type", "")).upper()
        text = c.get("text", "")
        if ctype == "BODY" and len(text) > 1024:
            raise GraphError(100, "BODY text must be at most 1024 characters")
        if (
            ctype in ("HEADER", "FOOTER")
            and str(c.get("format", "TEXT")).upper() == "TEXT"
            and len(text) > 60
        ):
            raise GraphError(100, f"{ctype} text must be at most 60 characters")
        if ctype == "BUTTONS" and len(c.get("buttons", [])) > 10:
            raise GraphError(100, "A template has at most 10 buttons")
    parameter_format = str(body.get("parameter_format", "positional")).lower()
    if parameter_format not in ("positional", "named"):
        raise GraphError(100, "Param parameter_format must be one of {POSITIONAL, NAMED}")
    return TemplateConfig(
        name=name,
        language=language,
        category=category,
        status="PENDING",
        parameter_format=parameter_format,
        components=components,
    )
