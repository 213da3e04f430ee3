"""One Settings object, read from the environment with the ``FEATUREGAP_`` prefix."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings"]

_REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Every limit and location FeatureGap uses; each one can be set as ``FEATUREGAP_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="FEATUREGAP_", extra="ignore")

    data_dir: Path = Field(
        Path("data"), description="Where the store keeps images and the database."
    )
    database_url: str | None = Field(
        None, description="Any SQLAlchemy URL; default: SQLite (WAL) inside data_dir."
    )
    models_dir: Path = Field(_REPO_ROOT / "models", description="Weight files and their sidecars.")
    default_model: str = "efficientnet_lite0"

    api_token: str | None = Field(None, description="When set, /api needs 'Authorization: Bearer'.")
    cors_origins: list[str] = Field(default_factory=list, description="Allowed CORS origins.")

    max_upload_bytes: int = Field(25 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(40_000_000, gt=0, description="Refuse decompression bombs.")
    max_boxes_per_image: int = Field(500, gt=0)
    max_samples_per_request: int = Field(5_000, gt=0, description="Boxes one analysis may use.")
    max_permutations: int = Field(10_000, ge=0)
    max_layers_per_request: int = Field(32, gt=0)

    native_max_side: int = Field(1024, ge=32, description="Longest side in 'native' input mode.")
    feature_cache_bytes: int = Field(1024 * 1024 * 1024, ge=0)
    torch_threads: int | None = Field(None, gt=0)
    import_job_threshold: int = Field(
        2_000, gt=0, description="COCO imports with more annotations than this run as a job.")
    analysis_job_threshold: int = Field(
        20_000, gt=0, description="Analyses with more work units than this run as a job "
        "(202 + job id): boxes × permutations for distances, boxes × layers for separation.")
    workers: int = Field(
        2, ge=1, le=64, description="Worker threads that run heavy requests and jobs.")
    queue_limit: int = Field(
        64, ge=0, description="Heavy requests and jobs that may wait for a worker; past it "
        "the API answers 503 with Retry-After.")
    demo: bool = Field(False, description="Load the demo project into an empty store at start.")

    @field_validator("data_dir", "models_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL, defaulting to a SQLite file in ``data_dir``."""
        return self.database_url or f"sqlite:///{self.data_dir / 'featuregap.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests override with ``get_settings.cache_clear()``)."""
    return Settings()
