"""The pricing engine: Meta's rules as pure functions of the facts Parley has recorded.

Facts are kept per *timeline*: one business phone number × one customer. A timeline holds the
customer's inbound messages (customer-service windows, ad referrals → free entry points) and the
business's delivered outbound messages (send record: template or not, category; Meta's pricing
object as reported). :func:`price_timeline` prices every delivered message of a timeline; the
result depends only on the set of facts, never on the order they arrived in.

Which of Meta's rules apply is decided per message by its delivery time (UTC) from the dated
rule table in :mod:`parley_billing.domain.rules`; the two models behave as follows:

- **CBP**: 24 h conversations per category opened by the first delivered business message of that
  category; a service conversation when a free-form message is delivered and nothing is open; a
  72 h free-entry-point conversation (closing the others) when the business replies within 24 h to
  a customer who came from an ad or a Page button. Whether service conversations are charged comes
  from the rule row. The charge sits on the message that opened the conversation.
- **PMP**: each delivered message is charged at its category's rate in the recipient's market,
  except every message inside a free-entry-point window (72 h from the reply), and, as the rule row
  in force says, free-form replies (``service``) and utility templates inside an open
  customer-service window. Meta Business Agent messages are their own category, charged per token
  when the row says so (no per-message rate: the amount stays empty and they are shown as charged
  by Meta per token, not as unpriced).

Month-level rules (volume tiers, the 1,000 free conversations per month of CBP) depend on a
message's rank within its month and are applied by :func:`apply_monthly_effects` over a month's
priced messages.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from parley_billing.domain.markets import market_for_customer
from parley_billing.domain.rates import TIERED_CATEGORIES, RateBook, TierBook
from parley_billing.domain.rules import PMP_START, rules_at

CUSTOMER_SERVICE_WINDOW = timedelta(hours=24)
FEP_REPLY_WINDOW = timedelta(hours=24)
FEP_WINDOW = timedelta(hours=72)
CONVERSATION = timedelta(hours=24)
# How far back a message's price can look: the FEP opener may be 24 h after the referral and the
# FEP lasts 72 h. Used by the store to bound re-pricing after a new fact.
PMP_LOOKBACK = FEP_REPLY_WINDOW + FEP_WINDOW

TEMPLATE_CATEGORIES = frozenset({"marketing", "marketing_lite", "utility", "authentication",
                                 "authentication-international", "authentication_international"})
# Parley's ledger name of Meta Business Agent messages. Meta's page names the category; the value
# its webhooks carry was not published in what we could read, so both spellings are recognised.
BUSINESS_AGENT = "business_agent"
BUSINESS_AGENT_CATEGORIES = frozenset({"business_agent", "meta_business_agent"})
PER_TOKEN_NOTE = "charged by Meta per token"  # noqa: S105 (a label, not a secret)
REGULAR, FREE_CSW, FREE_FEP, FREE_TIER = "regular", "free_customer_service", "free_entry_point", "free_tier"
ZERO = Decimal(0)


@dataclass(slots=True)  # not frozen: built per message on the hot path; never mutated
class MetaPricing:
    """Meta's ``pricing`` object as reported on a status (kept for reconciliation)."""

    billable: bool | None = None
    pricing_model: str | None = None
    type: str | None = None
    category: str | None = None


@dataclass(slots=True)  # not frozen: built per message on the hot path; never mutated
class InboundFact:
    at: datetime
    referral: bool = False  # came from a click-to-WhatsApp ad or a Page button


@dataclass(slots=True)  # not frozen: built per message on the hot path; never mutated
class OutboundFact:
    wamid: str
    delivered_at: datetime  # the earliest delivered/read/played time
    is_template: bool | None = None  # None: no send record (yet)
    category: str | None = None  # the send record's template category
    meta: MetaPricing | None = None


@dataclass(frozen=True, slots=True)
class Timeline:
    customer: str  # the recipient's number (E.164 digits) or BSUID
    inbound: Sequence[InboundFact]
    outbound: Sequence[OutboundFact]
    account: str = ""  # WABA (or number) the CBP free tier is counted on
    phone: str | None = None  # for a BSUID customer: a number another record of them carried


@dataclass(frozen=True, slots=True)
class Business:
    country: str | None  # ISO alpha-2 of the business's primary location
    rates: RateBook


@dataclass(slots=True)  # not frozen: built per message on the hot path; never mutated
class PricedMessage:
    wamid: str
    delivered_at: datetime
    pricing_model: str  # CBP | PMP
    category: str
    type: str  # regular | free_customer_service | free_entry_point | free_tier
    billable: bool
    market: str
    country: str | None
    currency: str
    amount: Decimal | None  # None: billable but the rate card offers no rate (unpriced)
    account: str = ""
    conversation_id: str | None = None  # CBP: the wamid that opened the conversation
    opens_conversation: bool = False
    meta: MetaPricing | None = None
    rules: str = ""  # the name of the rule row in force at delivery
    market_source: str = "phone"  # phone | contact_phone | bsuid_prefix | unknown

    @property
    def per_token(self) -> bool:
        """Charged by Meta per token (no per-message amount)."""
        return self.billable and self.category == BUSINESS_AGENT

    @property
    def unpriced(self) -> bool:
        """Charged by the rules, but the rate card has no rate for it."""
        return self.billable and self.amount is None and self.category != BUSINESS_AGENT


def resolve_category(m: OutboundFact) -> tuple[bool, str]:
    """(is template, category) from Parley's send record, else from Meta's status."""
    meta_cat = m.meta.category if m.meta else None
    if m.category in BUSINESS_AGENT_CATEGORIES or (not m.is_template and meta_cat in BUSINESS_AGENT_CATEGORIES):
        return False, BUSINESS_AGENT
    if m.is_template is False:
        return False, "service"
    if m.is_template is True:
        cat = m.category or (meta_cat if meta_cat in TEMPLATE_CATEGORIES else None) or "marketing"
    elif meta_cat in TEMPLATE_CATEGORIES:
        cat = meta_cat
    else:
        return False, "service"
    cat = cat.replace("_", "-") if cat.startswith("authentication") else cat
    # Parley decides authentication-international itself (business vs recipient country).
    return True, "authentication" if cat == "authentication-international" else cat


def free_entry_point_windows(inbound: Sequence[InboundFact], deliveries: Sequence[datetime]
                             ) -> list[tuple[datetime, datetime]]:
    """[opened, closes) of every FEP window: the first business delivery within 24 h of a referral."""
    deliveries = sorted(deliveries)
    windows = []
    for fact in inbound:
        if not fact.referral:
            continue
        i = bisect.bisect_left(deliveries, fact.at)
        if i < len(deliveries) and deliveries[i] < fact.at + FEP_REPLY_WINDOW:
            windows.append((deliveries[i], deliveries[i] + FEP_WINDOW))
    return sorted(set(windows))


class _Windows:
    __slots__ = ("max_end", "starts")

    def __init__(self, spans: Iterable[tuple[datetime, datetime]]) -> None:
        ordered = sorted(spans)
        self.starts = [s for s, _ in ordered]
        # running max of ends, so "is t covered" is one bisect
        self.max_end: list[datetime] = []
        for _, e in ordered:
            self.max_end.append(max(e, self.max_end[-1]) if self.max_end else e)

    def covers(self, t: datetime) -> bool:
        if not self.starts:
            return False
        i = bisect.bisect_right(self.starts, t)
        return i > 0 and self.max_end[i - 1] > t


def _rate(business: Business, market_name: str, fallback: str | None, category: str, on: date
          ) -> tuple[str, str, Decimal | None]:
    rate = business.rates.rate(market_name, fallback, category, on)
    return rate.market, rate.currency, rate.amount


def price_timeline(timeline: Timeline, business: Business, *, since: datetime | None = None
                   ) -> list[PricedMessage]:
    """Price every delivered outbound message of one business number × customer timeline; with
    ``since``, only those delivered at or after it (the others are context: windows, CBP state)."""
    market, market_source = market_for_customer(timeline.customer, timeline.phone)
    outbound = sorted(timeline.outbound, key=lambda m: (m.delivered_at, m.wamid))
    csw = _Windows((f.at, f.at + CUSTOMER_SERVICE_WINDOW) for f in timeline.inbound)
    fep_spans = free_entry_point_windows(timeline.inbound, [m.delivered_at for m in outbound])
    fep = _Windows(fep_spans)
    fep_openers = {start for start, _ in fep_spans}
    international = business.country is not None and market.country is not None and \
        business.country.upper() != market.country

    priced: list[PricedMessage] = []
    cbp = _CbpConversations(timeline.account)
    for m in outbound:
        t = m.delivered_at
        if since is not None and t < since and t >= PMP_START:
            continue  # a PMP price depends on windows only, not on the messages before it
        is_template, category = resolve_category(m)
        day = t.astimezone(UTC).date()
        if category == "authentication" and international and \
                business.rates.has_international_rate(market.name, market.fallback, day):
            category = "authentication-international"
        if t >= PMP_START:
            p = _price_pmp(m, business, market.name, market.fallback, market.country, is_template, category,
                           in_fep=fep.covers(t), in_csw=csw.covers(t), account=timeline.account)
        else:
            p = cbp.price(m, business, market.name, market.fallback, market.country, is_template, category,
                          opens_fep=t in fep_openers)
        p.market_source = market_source
        priced.append(p)
    if since is not None:
        return [p for p in priced if p.delivered_at >= since]
    return priced


def _price_pmp(m: OutboundFact, business: Business, market: str, fallback: str | None,
               country: str | None, is_template: bool, category: str, *, in_fep: bool, in_csw: bool,
               account: str) -> PricedMessage:
    rules = rules_at(m.delivered_at)
    day = m.delivered_at.astimezone(UTC).date()
    market_used, currency, rate = _rate(business, market, fallback,
                                        "marketing" if category == "marketing_lite" else category, day)
    if in_fep and rules.free_entry_point:
        kind, billable = FREE_FEP, False
    elif category == BUSINESS_AGENT:
        kind, billable, rate = (REGULAR, True, None) if rules.business_agent_charged else (FREE_CSW, False, rate)
    elif not is_template:
        kind, billable = (REGULAR, True) if rules.service_charged else (FREE_CSW, False)
    elif category == "utility" and in_csw and not rules.utility_in_window_charged:
        kind, billable = FREE_CSW, False
    else:
        kind, billable = REGULAR, True
    return PricedMessage(m.wamid, m.delivered_at, "PMP", category, kind, billable, market_used, country,
                         currency, rate if billable else ZERO, account, meta=m.meta, rules=rules.name)


@dataclass
class _Open:
    conversation_id: str
    category: str
    until: datetime
    billable: bool
    kind: str


class _CbpConversations:
    """The conversation state machine of one timeline, fed messages in delivery order."""

    def __init__(self, account: str) -> None:
        self.account = account
        self.open: dict[str, _Open] = {}
        self.fep: _Open | None = None

    def price(self, m: OutboundFact, business: Business, market: str, fallback: str | None,
              country: str | None, is_template: bool, category: str, *, opens_fep: bool) -> PricedMessage:
        t = m.delivered_at
        self.open = {k: c for k, c in self.open.items() if c.until > t}
        if self.fep and self.fep.until <= t:
            self.fep = None
        day = t.astimezone(UTC).date()
        rules = rules_at(t)

        def line(conv: _Open, category: str, opens: bool, amount: Decimal | None, market_used: str,
                 currency: str) -> PricedMessage:
            return PricedMessage(m.wamid, t, "CBP", category, conv.kind, conv.billable, market_used, country,
                                 currency, amount if opens else ZERO, self.account, conv.conversation_id,
                                 opens, m.meta, rules.name)

        market_used, currency, _ = _rate(business, market, fallback, "service", day)
        if self.fep is None and opens_fep and rules.free_entry_point:
            # A free entry point conversation closes every other open conversation.
            self.open.clear()
            self.fep = _Open(m.wamid, "referral_conversion", t + FEP_WINDOW, False, FREE_FEP)
            return line(self.fep, "referral_conversion", True, ZERO, market_used, currency)
        if self.fep is not None:
            return line(self.fep, "referral_conversion", False, ZERO, market_used, currency)
        if not is_template:
            if self.open:
                conv = min(self.open.values(), key=lambda c: (c.until, c.conversation_id))
                return line(conv, conv.category, False, ZERO, market_used, currency)
            free = not rules.service_charged
            conv = _Open(m.wamid, "service", t + CONVERSATION, not free, FREE_CSW if free else REGULAR)
            self.open["service"] = conv
            _, _, rate = _rate(business, market, fallback, "service", day)
            return line(conv, "service", True, ZERO if free else rate, market_used, currency)
        slot = category
        if slot in self.open:
            conv = self.open[slot]
            return line(conv, category, False, ZERO, market_used, currency)
        market_used, currency, rate = _rate(business, market, fallback,
                                            "marketing" if category == "marketing_lite" else category, day)
        conv = _Open(m.wamid, category, t + CONVERSATION, True, REGULAR)
        self.open[slot] = conv
        return line(conv, category, True, rate, market_used, currency)


# --- month-level rules -----------------------------------------------------------------------

def month_of(t: datetime, tz: ZoneInfo) -> str:
    local = t.astimezone(tz)
    return f"{local.year:04d}-{local.month:02d}"


def _free_tier_size(p: PricedMessage) -> int:
    """How many conversations of p's month the free tier that p counts towards holds (0: none)."""
    if p.pricing_model != "CBP" or not p.opens_conversation or not p.billable:
        return 0
    rules = rules_at(p.delivered_at)
    if rules.free_tier_any_category or p.category == "service":
        return rules.free_tier_conversations
    return 0


def apply_monthly_effects(priced: Iterable[PricedMessage], *, tz: ZoneInfo, tiers: TierBook | None = None
                          ) -> list[PricedMessage]:
    """Apply the rules that depend on a message's rank within its month (tenant's time zone):

    - CBP free tier: the first 1,000 eligible conversations per month and account are free;
    - PMP volume tiers: the n-th charged utility/authentication message of a month in a market
      is priced at the tier rate covering n, when a tier table covers it.

    Ranks are by (delivery time, wamid), so the result does not depend on input order.
    """
    rows = sorted(priced, key=lambda p: (p.delivered_at, p.wamid))
    free_conversations: set[str] = set()
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for p in rows:
        size = _free_tier_size(p)
        if size:
            key = (month_of(p.delivered_at, tz), p.account)
            counts[key] += 1
            if counts[key] <= size:
                free_conversations.add(p.conversation_id or p.wamid)
    ranks: dict[tuple[str, str, str], int] = defaultdict(int)
    out: list[PricedMessage] = []
    for p in rows:
        if p.pricing_model == "CBP" and p.conversation_id in free_conversations:
            p = replace(p, type=FREE_TIER, billable=False, amount=ZERO)
        elif tiers and p.pricing_model == "PMP" and p.billable and p.category in TIERED_CATEGORIES \
                and p.amount is not None:
            month = month_of(p.delivered_at, tz)
            tier_key = (month, p.market, p.category)
            ranks[tier_key] += 1
            local = p.delivered_at.astimezone(tz)
            tier_rate = tiers.rate_for_rank(p.market, p.category, date(local.year, local.month, 1), ranks[tier_key])
            if tier_rate is not None:
                p = replace(p, amount=tier_rate)
        out.append(p)
    return out


# --- summaries -------------------------------------------------------------------------------

@dataclass
class SummaryLine:
    messages: int = 0
    billable: int = 0
    unpriced: int = 0
    per_token: int = 0
    amount: Decimal = ZERO


def summarize(priced: Iterable[PricedMessage], *keys: str) -> dict[tuple[str, ...], SummaryLine]:
    """Totals grouped by the named attributes of PricedMessage (e.g. "market", "category")."""
    out: dict[tuple[str, ...], SummaryLine] = defaultdict(SummaryLine)
    for p in priced:
        line = out[tuple(str(getattr(p, k)) for k in keys)]
        line.messages += 1
        if p.billable:
            line.billable += 1
            line.unpriced += p.unpriced
            line.per_token += p.per_token
        line.amount += p.amount or ZERO
    return dict(out)
