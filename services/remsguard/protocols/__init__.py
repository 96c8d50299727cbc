"""Monitoring protocols as data: one TOML file per protocol, shipped with the package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from remsguard.domain.engine import MonitoringEngine
from remsguard.domain.protocol import MonitoringProtocol, ProtocolError, parse_protocol

DEFAULT_PROTOCOL = "spravato-rems"


def bundled_protocols() -> dict[str, MonitoringProtocol]:
    """Every protocol file shipped in this package, by name."""
    protocols: dict[str, MonitoringProtocol] = {}
    for entry in resources.files(__name__).iterdir():
        if entry.name.endswith(".toml"):
            protocol = parse_protocol(entry.read_text(encoding="utf-8"), source=entry.name)
            if f"{protocol.name}.toml" != entry.name:
                raise ProtocolError(f"{entry.name}: file name must be {protocol.name}.toml")
            protocols[protocol.name] = protocol
    return protocols


def load_protocol_file(path: Path) -> MonitoringProtocol:
    """A clinic's own protocol file."""
    return parse_protocol(path.read_text(encoding="utf-8"), source=str(path))


def load_protocols(extra_files: list[Path] | None = None) -> dict[str, MonitoringProtocol]:
    """The bundled protocols plus a clinic's own files (which may replace a bundled one)."""
    protocols = bundled_protocols()
    for path in extra_files or []:
        protocol = load_protocol_file(path)
        protocols[protocol.name] = protocol
    return protocols


def build_engine(
    default_protocol: str, extra_protocol_files: list[Path] | None = None
) -> MonitoringEngine:
    """An engine that knows the bundled protocols and a clinic's own files."""
    return MonitoringEngine(load_protocols(extra_protocol_files), default_protocol=default_protocol)
