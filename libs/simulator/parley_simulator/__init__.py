"""A test double of Meta's WhatsApp Cloud API: the Graph API send and template endpoints, signed
status/template/inbound webhooks, and realistic inbound traffic (see docs/adr/0040-simulator-*.md)."""

from .app import create_app
from .config import AppConfig, Behaviour, PhoneNumberConfig, SimulatorConfig, TemplateConfig, WabaConfig
from .simulator import CloudApiSimulator
from .traffic import BusinessNumber, InboundWebhook, TrafficGenerator
from .webhooks import sign

__all__ = [
    "AppConfig",
    "Behaviour",
    "BusinessNumber",
    "CloudApiSimulator",
    "InboundWebhook",
    "PhoneNumberConfig",
    "SimulatorConfig",
    "TemplateConfig",
    "TrafficGenerator",
    "WabaConfig",
    "create_app",
    "sign",
]
