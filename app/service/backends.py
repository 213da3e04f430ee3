"""Where extraction runs: this process (:func:`app.service.extraction.extract_boxes`) or a
Ray cluster (:func:`app.service.ray_extraction.extract_boxes_ray`), behind one call.

Both fill the same feature store with the same descriptors; the CLI (``extract --ray``)
and the API's extraction job (``FEATUREGAP_RAY_ADDRESS``) pick one with :func:`backend`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.config import Settings
from app.engine.models import LoadedModel
from app.engine.preprocess import InputMode
from app.engine.regions import Descriptor
from app.service.extraction import ExtractionReport, extract_boxes
from app.service.ray_extraction import RayOptions, extract_boxes_ray
from app.store import BoxRecord, Store

__all__ = ["ExtractionBackend", "backend"]

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class ExtractionBackend:
    """Extracts and stores the descriptors of boxes the feature store lacks: in this
    process (``ray`` is ``None``) or on a Ray actor pool (:mod:`app.service.ray_extraction`).
    """

    ray: RayOptions | None = None

    def __call__(
        self,
        store: Store,
        model: LoadedModel,
        boxes: Sequence[BoxRecord],
        layers: Sequence[str],
        kind: Descriptor = "gap",
        grid_size: int = 4,
        mode: InputMode = "resize",
        batch_size: int = 16,
        progress: Progress | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> ExtractionReport:
        """Arguments and errors as :func:`app.service.extraction.extract_boxes` (and, on Ray,
        :func:`app.service.ray_extraction.extract_boxes_ray`)."""
        args = (store, model, boxes, layers, kind, grid_size, mode, batch_size, progress)
        if self.ray is None:
            report, _ = extract_boxes(*args, cancelled)
            return report
        return extract_boxes_ray(*args, cancelled, options=self.ray)


def backend(settings: Settings, ray_address: str | None = None) -> ExtractionBackend:
    """Ray when ``ray_address`` or ``settings.ray_address`` is set, else this process."""
    address = ray_address or settings.ray_address
    if address is None:
        return ExtractionBackend()
    return ExtractionBackend(
        RayOptions(
            address=address,
            actors=settings.ray_actors,
            cpus_per_actor=settings.ray_cpus_per_actor,
            gpus_per_actor=settings.ray_gpus_per_actor,
        )
    )
