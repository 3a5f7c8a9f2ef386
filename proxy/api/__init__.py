"""The control plane: REST, Prometheus ``/metrics`` and the dashboard, on aiohttp."""

from .app import create_app, start_api

__all__ = ["create_app", "start_api"]
