"""YAML config → typed model (→ FreeSWITCH XML, issue 2)."""

from .errors import ConfigError, ConfigIssue
from .loader import load_config, parse_config
from .model import Config

__all__ = ["Config", "ConfigError", "ConfigIssue", "load_config", "parse_config"]
