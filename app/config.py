"""One Settings object, read from the environment with the ``FEATUREGAP_`` prefix."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings", "get_settings"]

_REPO_ROOT = Path(__file__).resolve().parent.parent
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "testserver")
_ANY_ADDRESS = ("0.0.0.0", "::", "")


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
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(_LOCAL_HOSTS),
        description="Host header values the server answers (DNS-rebinding defence); a JSON "
        "list or comma-separated; '*' allows any. serve --host is added.",
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Origins besides the server's own that may POST/PUT/PATCH/DELETE when no "
        "API token is set (e.g. 'http://localhost:5173'); the CORS origins count too.",
    )
    serve_host: str | None = Field(
        None, description="The address 'featuregap serve --host' binds; an allowed host."
    )

    max_upload_bytes: int = Field(25 * 1024 * 1024, gt=0)
    max_json_bytes: int = Field(
        1024 * 1024, gt=0, description="Largest JSON request body (analysis and box routes)."
    )
    max_json_depth: int = Field(64, gt=0, description="Deepest nesting of a JSON request body.")
    max_image_pixels: int = Field(40_000_000, gt=0, description="Refuse decompression bombs.")
    max_decoded_bytes: int = Field(
        2 * 1024**3,
        gt=0,
        description="Bytes that decoding images may hold at once, counted "
        "as bit depth × channels × pixels plus the 8-bit RGB result; one image past it is "
        "refused (413), several at once wait for each other.",
    )
    max_request_bytes: int = Field(
        3 * 1024**3 // 2,
        gt=0,
        description="Memory one analysis request (distances, "
        "separation, embeddings, heat maps, predictions) may need by its estimate before it "
        "starts; past it the request is refused (413) naming the estimate.",
    )
    max_boxes_per_image: int = Field(500, gt=0)
    max_samples_per_request: int = Field(5_000, gt=0, description="Boxes one analysis may use.")
    max_permutations: int = Field(10_000, ge=0)
    max_layers_per_request: int = Field(32, gt=0)

    native_max_side: int = Field(1024, ge=32, description="Longest side in 'native' input mode.")
    feature_cache_bytes: int = Field(1024 * 1024 * 1024, ge=0)
    torch_threads: int | None = Field(
        None,
        gt=0,
        description=(
            "Torch intra-op threads, set at app start and by the CLI; unset: torch's default."
        ),
    )
    import_job_threshold: int = Field(
        2_000, gt=0, description="COCO imports with more annotations than this run as a job."
    )
    import_root: Path | None = Field(
        None,
        description="The folder whose datasets POST /api/import/dataset may read "
        "(paths outside it, symlinks included, are refused); unset: importing from the "
        "server's disk is off.",
    )
    max_zip_upload_bytes: int = Field(
        2 * 1024**3, gt=0, description="Largest dataset .zip upload (POST /api/import/zip)."
    )
    max_zip_members: int = Field(
        100_000, gt=0, description="Most files (and folders) a dataset .zip may hold."
    )
    max_zip_bytes: int = Field(
        4 * 1024**3, gt=0, description="Largest total uncompressed size of a dataset .zip."
    )
    max_zip_ratio: float = Field(
        200.0,
        gt=1,
        description="Largest uncompressed/compressed ratio of one member of a "
        "dataset .zip that unpacks to more than 1 MiB (zip-bomb guard).",
    )
    analysis_job_threshold: int = Field(
        20_000,
        gt=0,
        description="Analyses with more work units than this run as a job "
        "(202 + job id): boxes × permutations for distances, boxes × layers for separation.",
    )
    heatmap_job_threshold: int = Field(
        1_000,
        gt=0,
        description="Heat maps with more work units than this run as a job (202 + job id, "
        "progress per Score-CAM batch): the multiply-adds of their forward passes / 2**24. "
        "The default Score-CAM (64 channels, ~1,500 units) is a job; Grad-CAM at the "
        "model's input size (~90) answers at once.",
    )
    workers: int = Field(
        2, ge=1, le=64, description="Worker threads that run heavy requests and jobs."
    )
    queue_limit: int = Field(
        64,
        ge=0,
        description="Heavy requests and jobs that may wait for a worker; past it "
        "the API answers 503 with Retry-After.",
    )
    demo: bool = Field(False, description="Load the demo project into an empty store at start.")
    ray_address: str | None = Field(
        None,
        description="When set, extraction jobs run on this Ray cluster ('auto', "
        "'ray://head:10001', 'head:6379'; 'local' starts Ray in the server): needs "
        "pip install -e '.[ray]' and the data dir on storage every node mounts.",
    )
    ray_actors: int = Field(2, ge=1, description="Ray actors (model copies) per extraction.")
    ray_cpus_per_actor: float = Field(1.0, gt=0, description="CPUs each Ray actor reserves.")
    ray_gpus_per_actor: float = Field(0.0, ge=0, description="GPUs each Ray actor reserves.")

    @field_validator("data_dir", "models_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("ray_address", mode="before")
    @classmethod
    def _blank_address_is_off(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("import_root", mode="before")
    @classmethod
    def _blank_root_is_off(cls, value: Any) -> Any:
        # An empty FEATUREGAP_IMPORT_ROOT means off, never "the current folder".
        if isinstance(value, str) and not value.strip():
            return None
        return Path(value).expanduser() if isinstance(value, str) else value

    @field_validator("api_token")
    @classmethod
    def _token_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError(
                "FEATUREGAP_API_TOKEN is set but empty, which would leave the API open; "
                "unset it to run without a token (local use), or give it a long random value"
            )
        return value

    @field_validator("allowed_hosts", "allowed_origins", mode="before")
    @classmethod
    def _list_or_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @property
    def hosts(self) -> list[str]:
        """The allowed Host names: ``allowed_hosts`` plus the address ``serve`` binds."""
        hosts = [host.lower() for host in self.allowed_hosts]
        if self.serve_host and self.serve_host not in _ANY_ADDRESS:
            hosts.append(self.serve_host.strip("[]").lower())
        return hosts

    @property
    def origins(self) -> list[str]:
        """Origins other than the server's own that may send unsafe requests without a token."""
        return [
            origin.rstrip("/").lower() for origin in [*self.allowed_origins, *self.cors_origins]
        ]

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL, defaulting to a SQLite file in ``data_dir``."""
        return self.database_url or f"sqlite:///{self.data_dir / 'featuregap.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests override with ``get_settings.cache_clear()``)."""
    return Settings()
