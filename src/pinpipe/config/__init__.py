"""One settings object for every pinpipe component.

Values come from, lowest precedence first: the defaults of the section models, an optional
TOML config file (``--config FILE``, ``PINPIPE_CONFIG`` or ``./pinpipe.toml``), environment
variables ``PINPIPE_*`` (nested with a double underscore: ``PINPIPE_BROKER__BOOTSTRAP_SERVERS``),
and explicit overrides (the CLI's flags, :func:`flag_overrides`). Every server binds to loopback
unless told otherwise; secrets are ``SecretStr`` so they print masked.

One module per group of settings, in data-flow order: ``services`` (broker, PostgreSQL),
``source`` (the emulated source, the emulator), ``ingest``, ``lake``, ``jobs`` (batch and
speed), ``up`` (``pinpipe up``, the dashboard); ``settings`` assembles them and loads them.
"""

from pinpipe.config.ingest import IngestSettings
from pinpipe.config.jobs import BatchSettings, SpeedSettings, check_poster_window
from pinpipe.config.lake import LakeSettings
from pinpipe.config.services import BrokerSettings, PostgresSettings
from pinpipe.config.settings import (
    DEFAULT_CONFIG_FILE,
    ConfigFileError,
    Settings,
    flag_overrides,
    load_settings,
    masked_dump,
)
from pinpipe.config.source import EmulatorSettings, SourceSettings
from pinpipe.config.up import DashboardSettings, UpSettings, client_host

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "BatchSettings",
    "BrokerSettings",
    "ConfigFileError",
    "DashboardSettings",
    "EmulatorSettings",
    "IngestSettings",
    "LakeSettings",
    "PostgresSettings",
    "Settings",
    "SourceSettings",
    "SpeedSettings",
    "UpSettings",
    "check_poster_window",
    "client_host",
    "flag_overrides",
    "load_settings",
    "masked_dump",
]
