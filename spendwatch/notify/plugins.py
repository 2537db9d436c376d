"""Imports every built-in channel so each registers its name (no entry-point scan at start-up)."""

from spendwatch.notify import channels, ses, smtp, webhook

__all__ = ["channels", "ses", "smtp", "webhook"]
