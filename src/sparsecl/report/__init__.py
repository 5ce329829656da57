"""Final tables, the reproduction ledger and plots, built from every run's summary files."""

from .build import build_report

__all__ = ["build_report"]
