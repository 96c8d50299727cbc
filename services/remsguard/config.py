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
    # The REMS gate (PATIENT_NOT_ENROLLED, SETTING_NOT_CERTIFIED) for protocols that ask for it
    # (`rems_gate = true`); false: not checked anywhere. The processor re-reads the registry
    # from the compliance log (REMSGUARD_DATABASE_URL) this often.
    rems_gate: bool = True
    registry_refresh_seconds: float = Field(default=30.0, gt=0)
    signing_key: SecretStr | None = None  # tree-head signing: PEM or 32-byte hex/base64 seed
    signing_key_file: Path | None = None  # or a file holding either
    # Embedded mode (`remsguard up`): one process, one port, files in data_dir.
    data_dir: Path = Path(".local/remsguard")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8400, ge=0, le=65535)
    ingest_max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    ingest_max_events: int = Field(default=10_000, ge=1)  # events per request (413 above)
    # Event times are inputs to validate: an event stamped more than this far ahead of the
    # receiving process's clock is rejected (`occurred_in_future`), one older than the horizon
    # is rejected (`too_old`), on every live path (ingest, processor, publish, client).
    event_max_future_seconds: float = Field(default=300.0, ge=0)
    event_max_age_days: float = Field(default=30.0, gt=0)
    # HTTP hardening: the OpenAPI docs (served from the package, never a CDN) are off unless
    # asked for; /metrics needs this bearer token when it is set.
    http_docs: bool = False
    metrics_token: SecretStr | None = None
    metrics_max_clinics: int = Field(default=1_000, ge=1)  # clinic label values, at most
    # Embedded mode signs a tree head this often (and at shutdown) with its own key.
    tree_head_interval_seconds: float = Field(default=300.0, gt=0)
    # Restart (issue 19): embedded mode snapshots engine state every snapshot_interval_seconds,
    # or sooner after snapshot_every_events journaled events (eviction: session_retention_*).
    snapshot_interval_seconds: float = Field(default=300.0, gt=0)
    snapshot_every_events: int = Field(default=100_000, ge=1)

    # Stream processor (`remsguard topics create`, `processor`, `publish`, `alerts tail`).
    topic_prefix: str = ""  # prepended to every topic name: isolates environments and tests
    topic_partitions: int = Field(default=6, ge=1)  # all topics are co-partitioned
    topic_replication: int = Field(default=1, ge=1)
    processor_app_id: str = "remsguard-processor"  # consumer group and changelog topic prefix
    # Faust keeps a small local state folder per app; out of the working tree's way.
    processor_data_dir: str = ".local/faust"
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    clock_tick_seconds: float = Field(default=0.5, gt=0)  # how often the deadline timer runs
    clock_idle_grace_seconds: float = Field(default=3.0, ge=0)  # caught-up and quiet this long
    state_flush_seconds: float = Field(default=1.0, gt=0)  # session state write-behind period
    # ... while a partition catches up a backlog (more input behind than ~1 s of it)
    state_flush_backlog_seconds: float = Field(default=5.0, gt=0)
    # A finished session (discharged, every check decided) leaves the engine this long after
    # its discharge (`MonitoringEngine.evict_finished`): late events within it are judged with
    # the session; after it they are recorded and judged by no rule. The processor evicts
    # every `session_eviction_seconds` and writes the removal to its changelog.
    session_retention_hours: float = Field(default=24.0, gt=0)
    session_eviction_seconds: float = Field(default=60.0, gt=0)
    protocol_files: list[Path] = Field(default_factory=list)  # a clinic's own protocol files
    # How long a Kafka command waits for a broker to answer before it says so and exits.
    kafka_connect_timeout_seconds: float = Field(default=15.0, gt=0)
    # Where the processor serves /metrics and /healthz (0.0.0.0 to let a scraper elsewhere in).
    metrics_host: str = "127.0.0.1"
    # /healthz turns unhealthy when a partition's heartbeat has not come through the agent,
    # or the agent last crashed, within this long (a crash loop, a stall, a lost broker).
    processor_stall_seconds: float = Field(default=60.0, gt=0)

    # Staff alerting (`remsguard notifier`, and the same service inside `remsguard up`).
    alerting_policy_file: Path | None = None  # TOML/JSON escalation policies per clinic
    webhook_url: str | None = None  # signed webhook for notifications and escalations
    webhook_secret: SecretStr | None = None  # HMAC-SHA256 key of X-Remsguard-Signature
    webhook_max_attempts: int = Field(default=6, ge=1, le=20)
    webhook_backoff_seconds: float = Field(default=0.5, gt=0)  # first retry delay (doubles)
    webhook_max_backoff_seconds: float = Field(default=30.0, gt=0)
    webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    escalation_tick_seconds: float = Field(default=1.0, gt=0)
    alerting_catchup_seconds: float = Field(default=3600.0, ge=0)  # notify late after restart
    alerting_max_shelf_minutes: int = Field(default=60, ge=1, le=24 * 60)  # warnings only
    # A patient's alerts within this window after a notification go out as one message
    # (critical ones at once); 0 turns grouping off. Consoles are never grouped.
    alerting_group_seconds: float = Field(default=30.0, ge=0, le=600)
    notifier_group_id: str = "remsguard-notifier"

    # Auditor API (`remsguard api`): the compliance log at database_url, no engine.
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8410, ge=0, le=65535)
    form_check_seconds: float = Field(default=300.0, gt=0)  # MONITORING_FORM_OVERDUE check
    # Recompute session summaries and forms from new audit records in the API process (for
    # writers that store records only, e.g. embedded mode; the audit sink already does it).
    api_follow_sessions: bool = False
    processor_session_timeout_seconds: float = Field(default=10.0, gt=0)  # a dead worker's
    # partitions move after this long
    # The staff console in `remsguard api` (Kafka deployment): follow the processor's session
    # changelog (sessions board, discharge readiness) and the alerts topic (live SSE), and take
    # acknowledgements. Off: the API serves the auditor endpoints only.
    api_staff_console: bool = False
    api_session_retention_hours: float = Field(default=24.0, gt=0)  # idle sessions leave

    # HL7 v2 over MLLP (`remsguard up --hl7-port N`, `remsguard hl7-gateway`).
    hl7_host: str = "127.0.0.1"
    hl7_port: int | None = Field(default=None, ge=0, le=65535)  # embedded mode: off unless set
    hl7_facilities_file: Path | None = None  # TOML [facilities]: MSH-4 -> clinic id
    hl7_code_files: list[Path] = Field(default_factory=list)  # a clinic's own code tables
    hl7_timezone: str = "UTC"  # what an HL7 time without an offset is taken in
    hl7_max_message_bytes: int = Field(default=1024 * 1024, ge=1024)
    hl7_read_timeout_seconds: float = Field(default=30.0, gt=0)  # idle or slow: closed
    hl7_max_connections: int = Field(default=1000, ge=1)
    hl7_tls_cert: Path | None = None  # TLS: certificate and key files (PEM)
    hl7_tls_key: Path | None = None
    hl7_tls_client_ca: Path | None = None  # clients must then present a certificate

    # FHIR R4 ingest (`/fhir/r4/...` in `remsguard up`, and in `remsguard api` onto Kafka).
    fhir_organizations_file: Path | None = None  # TOML [organizations]: Organization -> clinic
    fhir_code_files: list[Path] = Field(default_factory=list)  # a clinic's own code tables
    fhir_max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    fhir_max_entries: int = Field(default=1_000, ge=1)  # entries of one Bundle (413 above)


class UnsetDatabase(RuntimeError):
    """A command that writes or reads the compliance log was not told which one."""


def compliance_log_url(settings: Settings) -> str:
    """`REMSGUARD_DATABASE_URL`, or `UnsetDatabase`: never a guessed `./remsguard.db`, whose
    tokens and records no API on PostgreSQL would ever see."""
    if "database_url" not in settings.model_fields_set:
        raise UnsetDatabase(
            "which compliance log? set REMSGUARD_DATABASE_URL (or give --db URL where the "
            "command takes it)"
        )
    return settings.database_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
