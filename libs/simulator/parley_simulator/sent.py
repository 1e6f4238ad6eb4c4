"""The messages the simulator accepted: the newest ``keep`` of them, found by wamid and by
``biz_opaque_callback_data`` (the sender's request id, so a request sent twice shows as a
duplicate)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from .validation import normalise_recipient


@dataclass
class SentMessage:
    """A message the simulator accepted, with the statuses it planned for it."""

    wamid: str
    phone_number_id: str
    waba_id: str
    to: str
    wa_id: str
    type: str
    category: str  # marketing | utility | authentication | service
    template_name: str | None
    template_language: str | None
    biz_opaque_callback_data: str | None
    api_version: str
    accepted_at: float  # simulated unix time
    free_entry_point: bool
    in_service_window: bool
    failure_code: int | None = None
    statuses: list[dict[str, Any]] = field(default_factory=list)
    recipient_phone: str | None = None  # the user's number, when Meta may share it
    recipient_user_id: str | None = None  # the user's BSUID
    request: dict[str, Any] = field(default_factory=dict)
    api: str = "messages"  # or "marketing_messages" (the Marketing Messages API)

    def summary(self) -> dict[str, Any]:
        return asdict(self)


class SentLog:
    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.messages: dict[str, SentMessage] = {}
        self._by_opaque: dict[str, list[str]] = defaultdict(list)

    def clear(self) -> None:
        self.messages.clear()  # in place: the simulator hands this dict out
        self._by_opaque.clear()

    def remember(self, msg: SentMessage) -> None:
        self.messages[msg.wamid] = msg
        if msg.biz_opaque_callback_data is not None:
            self._by_opaque[msg.biz_opaque_callback_data].append(msg.wamid)
        while len(self.messages) > self.keep:
            oldest = self.messages.pop(next(iter(self.messages)))
            key = oldest.biz_opaque_callback_data
            if key is not None:
                kept = [w for w in self._by_opaque.get(key, []) if w != oldest.wamid]
                if kept:
                    self._by_opaque[key] = kept
                else:
                    self._by_opaque.pop(key, None)

    def find(
        self,
        *,
        wamid: str | None = None,
        biz_opaque_callback_data: str | None = None,
        phone_number_id: str | None = None,
        to: str | None = None,
    ) -> list[SentMessage]:
        if wamid is not None:
            found = [self.messages[wamid]] if wamid in self.messages else []
        elif biz_opaque_callback_data is not None:
            found = [self.messages[w] for w in self._by_opaque.get(biz_opaque_callback_data, [])]
        else:
            found = list(self.messages.values())
        if phone_number_id is not None:
            found = [m for m in found if m.phone_number_id == phone_number_id]
        if to is not None:
            wa_id = normalise_recipient(to)
            found = [m for m in found if m.wa_id == wa_id]
        return found

    def duplicated_callback_data(self) -> int:
        """How many callback data values more than one accepted message carried."""
        return sum(1 for wamids in self._by_opaque.values() if len(wamids) > 1)
