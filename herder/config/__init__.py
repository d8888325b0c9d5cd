"""Configuration: herder's TOML and the importers, loaded into one model.

``load_files(paths)`` is the entry point; it raises ``ConfigErrors`` listing every problem
(file, line, key, what was expected).
"""

from herder.config.errors import ConfigError, ConfigErrors
from herder.config.load import load_files
from herder.config.model import Config

__all__ = ["Config", "ConfigError", "ConfigErrors", "load_files"]
