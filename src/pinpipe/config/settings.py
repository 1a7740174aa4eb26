"""The one :class:`Settings` object, how it is loaded, and how it is shown."""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pinpipe.config.ingest import IngestSettings
from pinpipe.config.jobs import BatchSettings, SpeedSettings
from pinpipe.config.lake import LakeSettings
from pinpipe.config.services import BrokerSettings, PostgresSettings
from pinpipe.config.source import EmulatorSettings, SourceSettings
from pinpipe.config.up import UpSettings

DEFAULT_CONFIG_FILE = Path("pinpipe.toml")

# The config file chosen for the Settings being built (set by load_settings).
_config_file: ContextVar[Path | None] = ContextVar("pinpipe_config_file", default=None)


class Settings(BaseSettings):
    """Everything configurable in pinpipe."""

    model_config = SettingsConfigDict(
        env_prefix="PINPIPE_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data_dir: Path = Field(Path("data"), description="Embedded services' state, the lake, logs.")
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    postgres: PostgresSettings = Field(default_factory=PostgresSettings)
    source: SourceSettings = Field(default_factory=SourceSettings)
    emulator: EmulatorSettings = Field(default_factory=EmulatorSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    lake: LakeSettings = Field(default_factory=LakeSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    speed: SpeedSettings = Field(default_factory=SpeedSettings)
    up: UpSettings = Field(default_factory=UpSettings)

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Detached services outlive the directory a command was started from.
        return value.expanduser().resolve()

    @property
    def run_dir(self) -> Path:
        """Where running embedded services record their pid and address."""
        return self.data_dir / "run"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file.get()
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


class ConfigFileError(ValueError):
    """The named config file does not exist; retrying will not help."""


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the effective settings: defaults < config file < ``PINPIPE_*`` env < ``overrides``.

    ``overrides`` use the field names of :class:`Settings` (nested models as dicts); the
    command-line flags come in through :func:`flag_overrides`.
    """
    explicit = config_file or os.environ.get("PINPIPE_CONFIG")
    path = Path(explicit) if explicit else DEFAULT_CONFIG_FILE
    if explicit and not path.is_file():
        raise ConfigFileError(f"config file not found: {path}")
    token = _config_file.set(path if path.is_file() else None)
    try:
        return Settings(**overrides)
    finally:
        _config_file.reset(token)


def flag_overrides(**flags: Any) -> dict[str, Any]:
    """The overrides of :func:`load_settings` for command-line flags, named like the environment:
    ``speed__trigger_s=0.5`` or ``up__dashboard__port=0`` (any depth) become nested dicts. A flag
    left unset (``None``) overrides nothing, so the file and the environment still apply.
    """
    nested: dict[str, Any] = {}
    for dotted, value in flags.items():
        if value is None:
            continue
        *sections, name = dotted.split("__")
        target = nested
        for section in sections:
            target = target.setdefault(section, {})
        target[name] = value
    return nested


_SECRET_OPTION = re.compile(r"password|secret|jaas|token|credential", re.IGNORECASE)
"""Free-form client options (``client_options``, ``java_client_options``) whose value is a secret."""


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with every secret replaced by ``**********``.

    ``SecretStr`` fields mask themselves; in the free-form option maps, a value whose option
    name looks like a credential (``sasl.password``, ``sasl.jaas.config``) is masked too.
    """

    def mask(data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {
            key: "**********" if isinstance(value, str) and _SECRET_OPTION.search(key) else mask(value)
            for key, value in data.items()
        }

    return mask(settings.model_dump(mode="json"))
