"""Persistence: per-minute pool history and the decision log, in SQLite (WAL)."""

from .history import HistoryRecorder, HistoryStore

__all__ = ["HistoryRecorder", "HistoryStore"]
