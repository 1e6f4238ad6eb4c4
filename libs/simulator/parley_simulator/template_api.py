"""Meta's template management API (a test double): list and create a WABA's templates, approve a
new one after the behaviour's review delay, and report every status change by a
``message_template_status_update`` webhook. The catalogue it manages is the one sends are checked
against (``templates.py``)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from .auth import AccessTokens, unknown_object
from .clock import SimClock
from .config import Behaviour, PhoneNumberConfig, TemplateConfig, WabaConfig
from .errors import GraphError
from .payloads import template_quality_webhook, template_status_webhook, templates_page
from .templates import StoredTemplate, TemplateCatalogue, parse_new_template
from .webhooks import WebhookDispatcher


class TemplateManagement:
    def __init__(self, *, catalogue: TemplateCatalogue, tokens: AccessTokens, wabas: dict[str, WabaConfig],
                 numbers: dict[str, PhoneNumberConfig], behaviour: Behaviour, stats: Counter[str],
                 dispatcher: WebhookDispatcher, clock: SimClock,
                 spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        self.templates = catalogue
        self.tokens = tokens
        self.wabas = wabas
        self.numbers = numbers
        self.behaviour = behaviour  # the simulator's, changed in place by the control API
        self.stats = stats
        self.dispatcher = dispatcher
        self.clock = clock
        self._spawn = spawn
        self.quality: dict[str, str] = {}  # template id -> Meta's quality score

    def list_page(
        self, waba_id: str, authorization: str | None, query: dict[str, str]
    ) -> dict[str, Any]:
        self._check_waba(waba_id, authorization)
        items = self.templates.list(
            waba_id,
            name=query.get("name"),
            status=query.get("status"),
            category=query.get("category"),
            language=query.get("language"),
        )
        return templates_page(items, waba_id, query)

    def create(self, waba_id: str, authorization: str | None, body: Any) -> dict[str, Any]:
        self._check_waba(waba_id, authorization)
        template = parse_new_template(body)
        existing = self.templates.find(waba_id, template.name, template.language)
        if existing is not None:
            raise GraphError(
                100,
                f"Content in this language already exists for template {template.name} ({template.language})",
            )
        stored = self.templates.add(waba_id, template)
        self.stats["templates_created"] += 1
        self._spawn(self._approve_later(stored))
        return {"id": stored.id, "status": "PENDING", "category": stored.template.category}

    async def _approve_later(self, stored: StoredTemplate) -> None:
        await asyncio.sleep(self.behaviour.template_approval_delay_s)
        if stored.status == "PENDING":
            self.set_status(stored, "APPROVED")

    def _check_waba(self, waba_id: str, authorization: str | None) -> None:
        self.tokens.check(authorization, (waba_id, *(p.id for p in self.numbers.values() if p.waba_id == waba_id)))
        if waba_id not in self.wabas:
            raise unknown_object(waba_id)

    def set_status(
        self, stored: StoredTemplate, status: str, *, reason: str | None = None, title: str | None = None
    ) -> None:
        self.templates.set_status(stored, status)
        self.stats[f"template_status_{status}"] += 1
        waba = self.wabas[stored.waba_id]
        self.dispatcher.post_payload(
            waba.app_id,
            template_status_webhook(stored, waba, status, reason=reason, title=title, now=self.clock.now()),
            kind="template_status",
        )

    def add(self, waba_id: str, template: TemplateConfig) -> StoredTemplate:
        return self.templates.add(waba_id, template)

    def set_quality(self, stored: StoredTemplate, score: str) -> None:
        """Meta rates a template's quality (GREEN, YELLOW, RED, UNKNOWN) and reports the change."""
        previous = self.quality.get(stored.id, "UNKNOWN")
        self.quality[stored.id] = score
        waba = self.wabas[stored.waba_id]
        self.dispatcher.post_payload(waba.app_id, template_quality_webhook(
            stored, waba, previous, score, self.clock.now()), kind="template_quality")
