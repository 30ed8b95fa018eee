"""Importing the package puts scaler/ on sys.path (tests/scaler/__init__.py)."""

from tests.scaler import SCALER

__all__ = ["SCALER"]
