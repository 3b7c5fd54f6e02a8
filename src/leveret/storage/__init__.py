"""Durable storage behind a small interface (see :mod:`leveret.storage.base`)."""
