"""Stack settings: one typed loader, `load_settings`, and its error type."""

from config.loader import ConfigError, load_settings, load_settings_from_pulumi
from config.model import ALL_ARCHS, Arch, FarmSettings, Mode

__all__ = [
    "ALL_ARCHS",
    "Arch",
    "ConfigError",
    "FarmSettings",
    "Mode",
    "load_settings",
    "load_settings_from_pulumi",
]
