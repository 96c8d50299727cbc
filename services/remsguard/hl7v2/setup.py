"""An MLLP listener from the settings: code tables, facility map, time zone, TLS."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from prometheus_client import CollectorRegistry

from remsguard.config import Settings
from remsguard.contract.code_tables import clinic_map
from remsguard.hl7v2.codes import CodeError, CodeTable
from remsguard.hl7v2.listener import Door, ListenerSettings, MLLPListener, tls_context
from remsguard.hl7v2.messages import Reader

__all__ = ["HL7ConfigError", "build_listener", "facilities_of"]


class HL7ConfigError(ValueError):
    """The HL7 settings cannot be used (said with the file or setting)."""


def facilities_of(path: Path | None) -> dict[str, str] | None:
    """MSH-4 (sending facility) -> clinic id, from `[facilities]` of a TOML file; None when
    no file is configured (then MSH-4 itself is the clinic id)."""
    try:
        return clinic_map(path, "facilities", "facility names")
    except CodeError as exc:
        raise HL7ConfigError(str(exc)) from None


def build_listener(
    settings: Settings,
    door: Door,
    registry: CollectorRegistry,
    *,
    port: int,
    clinic_label: Callable[[str], str] = lambda clinic: clinic,
) -> MLLPListener:
    try:
        codes = CodeTable.load(settings.hl7_code_files)
        zone = ZoneInfo(settings.hl7_timezone)
    except CodeError as exc:
        raise HL7ConfigError(str(exc)) from None
    except (ZoneInfoNotFoundError, ValueError):
        raise HL7ConfigError(f"unknown time zone {settings.hl7_timezone!r}") from None
    tls = None
    if settings.hl7_tls_cert is not None or settings.hl7_tls_key is not None:
        if settings.hl7_tls_cert is None or settings.hl7_tls_key is None:
            raise HL7ConfigError("TLS needs both REMSGUARD_HL7_TLS_CERT and _KEY")
        try:
            tls = tls_context(
                settings.hl7_tls_cert, settings.hl7_tls_key, settings.hl7_tls_client_ca
            )
        except (OSError, ValueError) as exc:
            raise HL7ConfigError(f"TLS: {exc}") from None
    listener_settings = ListenerSettings(
        host=settings.hl7_host,
        port=port,
        max_message_bytes=settings.hl7_max_message_bytes,
        read_timeout=settings.hl7_read_timeout_seconds,
        max_connections=settings.hl7_max_connections,
        tls=tls,
    )
    reader = Reader(codes, zone, facilities_of(settings.hl7_facilities_file))
    return MLLPListener(door, reader, listener_settings, registry, clinic_label=clinic_label)
