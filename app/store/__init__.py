"""Persistence: images on disk by content hash, boxes and results in SQLAlchemy."""
