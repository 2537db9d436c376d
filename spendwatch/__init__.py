"""spendwatch: watches cloud spend, names who and what caused a spike, and can switch it off."""

__version__ = "0.1.0"
