"""The service layer: joins the store's images and boxes to the engine's computations.

Routers in :mod:`app.api` stay thin and call these functions; the engine never sees the
store. Results are cached in the store's results table under keys that include every box's
coordinates and label, so a changed box never answers from a stale entry.
"""

__all__: list[str] = []
