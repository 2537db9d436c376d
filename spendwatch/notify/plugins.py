"""Imports every built-in channel so each registers its name (no entry-point scan at start-up)."""

from spendwatch.notify import channels, msteams, pagerduty, ses, smtp, webhook

__all__ = ["channels", "msteams", "pagerduty", "ses", "smtp", "webhook"]
