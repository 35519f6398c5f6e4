"""Configuration: the typed settings model, loading, and the generated reference."""

from postwerk.config.settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Settings", "load_settings"]
