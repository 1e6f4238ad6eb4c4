"""Meta's WhatsApp Cloud API webhooks, pure: signature checks and normalisation into contracts.

No I/O here: ingest (live intake), its raw-archive replay and billing's offline rater all call
the same functions on the same bytes, so they agree on every event and its id.
"""

from parley_common.meta.signature import find_signing_app, signature_matches
from parley_common.meta.webhook import (
    InvalidWebhookJson,
    NormalisedWebhook,
    ShapeProblem,
    TenantResolver,
    decode_webhook,
    normalise_raw_webhook,
    normalise_webhook,
)

__all__ = [
    "InvalidWebhookJson",
    "NormalisedWebhook",
    "ShapeProblem",
    "TenantResolver",
    "decode_webhook",
    "find_signing_app",
    "normalise_raw_webhook",
    "normalise_webhook",
    "signature_matches",
]
