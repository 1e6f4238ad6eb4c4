"""Parley billing: meters every billable WhatsApp message exactly once, prices it by Meta's rules,
invoices and reconciles per tenant."""
