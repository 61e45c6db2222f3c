"""The one Settings object; every option can be set as an `ECG_INTAKE_*` environment variable."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.engine import EngineKind

if TYPE_CHECKING:
    from celery.schedules import crontab

    from ingest.decode.limits import DecodeLimits

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_BUNDLE = REPO_ROOT / "models" / "default"


def embedded_database_path(home: Path) -> Path:
    """The SQLite file a data directory holds when no database URL is set; its name is spelled here only."""
    return home.expanduser().resolve() / "ecg-intake.db"


def embedded_database_url(home: Path) -> str:
    """The embedded database's URL, so a test or a benchmark that knows only the home finds what the service
    writes without building the whole settings (which would also read the environment)."""
    return f"sqlite:///{embedded_database_path(home)}"


def parse_crontab(line: str) -> crontab:
    """A crontab line as Celery's schedule; the one parse, so the validator refuses exactly what beat could not run."""
    from celery.schedules import crontab  # Celery only when a schedule is read: importing settings stays cheap

    fields = line.split()
    if len(fields) != 5:
        raise ValueError(f"{line!r}: a crontab line has five fields: minute hour day-of-month month day-of-week")
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    return crontab(minute=minute, hour=hour, day_of_month=day_of_month, month_of_year=month_of_year,
                   day_of_week=day_of_week)


class InboxSetting(BaseModel):
    """A watched folder; `source` names where its files come from (default: the folder's name)."""

    path: Path
    source: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: object) -> object:
        if isinstance(value, str | Path):
            text = str(value)
            name, sep, folder = text.partition("=")
            return {"path": folder, "source": name} if sep and name and "/" not in name else {"path": text}
        return value

    @property
    def source_name(self) -> str:
        return self.source or self.path.expanduser().resolve().name


class Settings(BaseSettings):
    """Embedded defaults (SQLite, file-backed broker) unless a database or broker URL is given."""

    model_config = SettingsConfigDict(env_prefix="ECG_INTAKE_", env_file=".env", extra="ignore")

    home: Path = Field(Path("ecg-intake-data"), description="data directory: database, archive, quarantine, pages")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite under home")
    broker_url: str | None = Field(None, description="Celery broker URL; default a file-backed queue under home")
    bundle: Path | None = Field(None, description="model bundle directory; default the shipped model")

    inboxes: list[InboxSetting] = Field(default_factory=list, description='folders to watch, JSON in the env var: '
                                        '["/in/a", "cardiology=/in/b", {"path": "/in/c", "source": "er"}]')
    stable_seconds: float = Field(2.0, ge=0, description="size and mtime must hold this long before a claim")
    poll_interval: float = Field(1.0, gt=0, description="seconds between inbox scans")
    use_fs_events: bool = True
    reoffer_seconds: float = Field(600, gt=0, description="a claim with no outcome this long after its offer is "
                                                         "offered again (its message may have died with the broker)")

    pdf_dpi: int = Field(200, ge=50, le=600)
    max_file_mb: float = Field(512, gt=0, description="larger files are quarantined as too_large")
    max_pages: int = Field(50, ge=1, description="documents with more pages are quarantined as too_many_pages")
    max_page_megapixels: float = Field(80, gt=0, description="decompression-bomb guard, checked before decoding")
    max_waveform_samples: int = Field(10_000_000, ge=1000, description="channels x samples one waveform (DICOM or "
                                      "vendor XML) may hold; more is quarantined as too_large before allocation")
    max_xml_depth: int = Field(64, ge=8, description="element nesting depth vendor ECG XML may reach")
    decode_timeout: float = Field(120, gt=0, description="seconds one file may take to decode")
    decode_isolation: bool = Field(True, description="decode in a child process that is killed on timeout")
    ingest_concurrency: int = Field(0, ge=0, description="files `run` decodes at once, each in its own decoder "
                                                         "process; 0: one per CPU core")
    allow_permission_only_pdf: bool = Field(False, description="accept encrypted PDFs that open without a password")
    digitise: bool = Field(True, description="read every stored page back as 12-lead signals (a waveform file's "
                           "own recording, else the drawing read back), with its measurements, trace and WFDB")
    engine: EngineKind = "auto"
    engine_cache: Path | None = Field(None, description="compiled engines and exported ONNX files; default "
                                                        "<home>/engines")
    batch_size: int = Field(8, ge=1, le=512, description="pages per forward pass")
    max_wait_ms: float = Field(50, ge=0, description="how long a page may wait for others to fill its batch")
    torch_threads: int = Field(0, ge=0, description="0: let torch decide")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None = Field(
        None, description="default: INFO for services, WARNING for `run --once`")
    log_format: Literal["text", "json"] = Field("text", description="json: one JSON object per log line on "
                                                "stderr, for a log collector (docs/configuration.md, Logs)")
    visibility_timeout: int = Field(4 * 3600, description="Redis redelivery timeout; longer than any task")
    champion_check_seconds: float = Field(10, ge=0, description="how often a worker asks the registry whether "
                                                               "a new champion was promoted")
    timezone: str = Field("UTC", description="time zone of the schedules, e.g. Europe/London")
    retrain_schedule: str = Field("0 2 * * *", description="when the nightly retraining runs: a crontab line "
                                                          "(minute hour day-of-month month day-of-week)")
    retrain_min_reviews: int = Field(100, ge=1, description="reviews since the champion below which the "
                                                            "nightly retraining is skipped")
    retrain_holdout_percent: float = Field(20, gt=0, lt=100, description="share of documents (by a stable hash) "
                                                                         "whose reviewed pages are never trained on")
    retrain_validation_percent: float = Field(10, gt=0, lt=100, description="share of the rest that picks the "
                                                                            "challenger's thresholds")
    retrain_epochs: float = Field(3, gt=0, description="passes over the new reviewed pages")
    retrain_replay_pages: int = Field(1000, ge=0, description="stage 1 synthetic pages mixed in, so earlier "
                                                              "skills are kept")
    retrain_margin: float = Field(0.01, ge=0, description="macro AUROC on the holdout the challenger must gain")
    retrain_class_tolerance: float = Field(0.02, ge=0, description="AUROC any one class may lose on the holdout")
    retrain_synthetic_pages: int = Field(500, ge=0, description="pages of the fixed synthetic benchmark; 0: none")
    retrain_synthetic_floor: float = Field(0.85, ge=0, le=1, description="macro AUROC the challenger must keep "
                                                                         "on the synthetic benchmark")
    retrain_lock_seconds: float = Field(900, gt=0, description="a retraining that stops refreshing its lock "
                                                              "this long is taken for dead")
    retrain_bootstrap: int = Field(1000, ge=100, description="paired bootstrap resamples for the decision")
    receive_ae_title: str = Field("ECGINTAKE", min_length=1, max_length=16, description="`receive`'s own AE "
                                  "title; a sender must call it by this name")
    receive_port: int = Field(11112, ge=1, le=65535, description="TCP port `receive` listens on (all interfaces)")
    receive_inbox: Path | None = Field(None, description="folder `receive` writes objects into; default the first "
                                       "of `inboxes`, else <home>/inbox")
    receive_allowed_callers: list[str] = Field(default_factory=list, description="calling AE titles `receive` "
                                               'accepts, JSON in the env var: ["CART1", "MUSE"]; empty: any caller')
    receive_max_associations: int = Field(10, ge=1, description="associations `receive` serves at once")
    receive_timeout: float = Field(60, gt=0, description="seconds `receive` waits on an association (ACSE), a "
                                                       "DIMSE message and an idle network before giving up")
    metrics_port: int = Field(0, ge=0, le=65535, description="TCP port on which `run`, `watch`, `worker` and "
                              "`receive` serve /metrics, /healthz and /readyz; 0: not served")
    metrics_host: str = Field("127.0.0.1", description="address that endpoint listens on; 0.0.0.0 for every "
                              "interface (a container, or Prometheus on another machine)")
    review_secret: str | None = Field(None, description="review UI session key; default one generated once "
                                                       "and kept in <home>/review-secret (mode 0600)")
    review_https_only: bool = Field(False, description="review UI session cookie only over https (Secure)")
    review_login_max_failures: int = Field(5, ge=1, description="failed review logins for one user name from one "
                                           "client address within the window before that client gets 429 for it")
    review_login_max_failures_per_name: int = Field(20, ge=1, description="failed review logins for one user name "
                                                    "within the window past which only clients that have not "
                                                    "failed for it have their password checked")
    review_login_max_failures_per_address: int = Field(20, ge=1, description="failed review logins per client "
                                                       "address within the window before login answers 429")
    review_login_window_seconds: float = Field(300, gt=0, description="the window the failed logins are counted in "
                                               "(in the database, shared by every review process)")
    review_session_idle_minutes: float = Field(30, gt=0, description="a review session unused this long ends")
    review_session_hours: float = Field(8, gt=0, description="a review session ends this long after its login")
    review_trusted_proxies: str = Field("", description="comma-separated addresses (or *) of reverse proxies whose "
                                        "X-Forwarded-For/-Proto the review server believes; empty: none")

    @field_validator("retrain_schedule")
    @classmethod
    def _crontab(cls, value: str) -> str:
        parse_crontab(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{value!r} is not a time zone name such as Europe/London or UTC") from exc
        return value

    @property
    def ingest_workers(self) -> int:
        return self.ingest_concurrency or os.cpu_count() or 1

    def decode_limits(self) -> DecodeLimits:
        from ingest.decode.limits import DecodeLimits  # imports the decoders; only workers need them

        return DecodeLimits(max_file_bytes=int(self.max_file_mb * 2**20), max_pages=self.max_pages,
                            max_page_pixels=int(self.max_page_megapixels * 1e6), timeout_s=self.decode_timeout,
                            pdf_dpi=self.pdf_dpi, allow_permission_only_pdf=self.allow_permission_only_pdf,
                            max_waveform_samples=self.max_waveform_samples, max_xml_depth=self.max_xml_depth)

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def archive_dir(self) -> Path:
        return self.home_dir / "archive"

    @property
    def quarantine_dir(self) -> Path:
        return self.home_dir / "quarantine"

    @property
    def pages_dir(self) -> Path:
        return self.home_dir / "pages"

    @property
    def receive_inbox_dir(self) -> Path:
        """Where `receive` writes: an inbox the watcher of `run` already watches when one is configured."""
        if self.receive_inbox:
            return self.receive_inbox.expanduser().resolve()
        if self.inboxes:
            return self.inboxes[0].path.expanduser().resolve()
        return self.home_dir / "inbox"

    @property
    def engine_cache_dir(self) -> Path:
        return self.engine_cache.expanduser().resolve() if self.engine_cache else self.home_dir / "engines"

    @property
    def models_dir(self) -> Path:
        """Challengers the nightly job trains; every worker must be able to read it."""
        return self.home_dir / "models"

    @property
    def retrain_dir(self) -> Path:
        return self.home_dir / "retrain"

    @property
    def broker_dir(self) -> Path:
        return self.home_dir / "broker"

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or embedded_database_url(self.home_dir)

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or "filesystem://localhost/"

    @property
    def embedded_broker(self) -> bool:
        return self.celery_broker_url.startswith("filesystem://")

    @property
    def bundle_dir(self) -> Path:
        return (self.bundle or SHIPPED_BUNDLE).expanduser().resolve()

    def ensure_dirs(self) -> None:
        for folder in (self.home_dir, self.archive_dir, self.quarantine_dir, self.pages_dir):
            folder.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
