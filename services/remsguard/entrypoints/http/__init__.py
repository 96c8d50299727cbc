"""The HTTP app of embedded mode: every endpoint on one port (`create_app(container)`)."""

from remsguard.entrypoints.http.app import create_app

__all__ = ["create_app"]
