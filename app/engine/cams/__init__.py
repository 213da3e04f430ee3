"""Heat-map methods on one layer's feature map: channel reductions and the CAM family.

Every method turns one image's feature map ``A`` (``C×h×w``, at the layer's own resolution)
into a raw ``h×w`` map; :mod:`app.engine.heatmaps` brings it to the image grid. One file per
family over a shared pipeline, as pytorch-grad-cam's ``base_cam.py`` does:

* :mod:`~app.engine.cams.base`: :func:`cam_map`, the registry :data:`METHODS`, options;
* :mod:`~app.engine.cams.reductions`: ``mean``, ``l2``, ``max``, ``channel``;
* :mod:`~app.engine.cams.gradient`: ``gradcam``, ``gradcampp``, ``layercam``;
* :mod:`~app.engine.cams.scorecam`: ``scorecam``;
* :mod:`~app.engine.cams.cam`: ``cam``, on the layer :mod:`~app.engine.cams.head` finds.

A new method is a file here with a ``@METHODS.register(name)`` class: every module of
this package is imported (the reductions first, the order users see), which registers it.
"""

from app.engine.cams import base
from app.engine.cams.base import *  # noqa: F403  (the package's surface is base's, plus:)
from app.engine.cams.head import cam_layers
from app.engine.cams.reductions import Reduction, reduce_channels
from app.engine.registry import import_family

__all__ = ["Reduction", "cam_layers", "reduce_channels"]
__all__ += base.__all__

import_family(__name__, __path__, first=["reductions"])  # noqa: F405 (the package's own)
