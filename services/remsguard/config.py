"""The one place remsguard reads its environment; bad values fail at start-up."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting, read from `REMSGUARD_*` variables (or a `.env` file)."""

    model_config = SettingsConfigDict(env_prefix="REMSGUARD_", env_file=".env", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    database_url: str = "sqlite:///remsguard.db"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    metrics_port: int = Field(default=9400, ge=0, le=65535)
    default_protocol: str = "spravato-rems"
    signing_key: SecretStr | None = None  # tree-head signing: PEM or 32-byte hex/base64 seed
    signing_key_file: Path | None = None  # or a file holding either
    # Embedded mode (`remsguard up`): one process, one port, files in data_dir.
    data_dir: Path = Path(".local/remsguard")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8400, ge=0, le=65535)
    ingest_max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    # "event": the engine clock is max(wall clock, latest event time), as in replay;
    # "wall": the wall clock only (devices' clocks running ahead cannot move deadlines).
    embedded_clock: Literal["event", "wall"] = "event"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
