"""FeatureGap: what a layer sees inside the boxes you draw, and how far apart your groups are."""

__version__ = "0.1.0"
