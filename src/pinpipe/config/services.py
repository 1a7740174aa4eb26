"""Settings of the services pinpipe connects to: the Kafka-protocol broker and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr


class BrokerSettings(BaseModel):
    """The Kafka-protocol broker. Without bootstrap servers pinpipe runs its embedded one."""

    bootstrap_servers: str | None = Field(
        None, description="host:port[,host:port]; unset means the embedded Tansu broker."
    )
    topic_prefix: str = Field("pinpipe", description="Topics are <prefix>.pin|.geo|.user|.dlq.")
    partitions: int = Field(3, ge=1, description="Partitions of each topic pinpipe creates.")
    replication_factor: int = Field(1, ge=1)
    embedded_port: int = Field(0, ge=0, le=65535, description="0 picks a free loopback port.")
    storage: Literal["memory", "s3"] = Field(
        "memory",
        description="The embedded broker's log: memory (lost when the broker stops) or s3 (kept in "
        "<data_dir>/broker-s3 by a local S3 server pinpipe starts first; survives a broker's death, "
        "but every fetch lists the partition's batches, so it slows down as the log grows and "
        "stalls past a few thousand batches per partition: README, Known limits). "
        "Ignored with bootstrap_servers.",
    )
    embedded_s3_port: int = Field(
        0, ge=0, le=65535, description="Port of that S3 server (storage = s3); 0 picks a free loopback port."
    )
    security_protocol: str | None = Field(None, description="PLAINTEXT, SSL, SASL_SSL, ...")
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    client_options: dict[str, str] = Field(
        default_factory=dict, description="Extra librdkafka properties, passed through as given."
    )
    java_client_options: dict[str, str] = Field(
        default_factory=dict,
        description="Extra Kafka Java client properties, for Spark's own kafka connector only "
        "(speed.source_format = kafka); e.g. sasl.jaas.config for a mechanism pinpipe cannot translate.",
    )

    def client_config(self, bootstrap_servers: str) -> dict[str, str]:
        """librdkafka properties shared by every producer, consumer and admin client."""
        config: dict[str, str] = {"bootstrap.servers": bootstrap_servers}
        optional = {
            "security.protocol": self.security_protocol,
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_ca_location,
        }
        config.update({key: value for key, value in optional.items() if value is not None})
        config.update(self.client_options)
        return config

    def java_client_config(self, bootstrap_servers: str) -> dict[str, str]:
        """The same connection as :meth:`client_config`, in the Kafka Java client's properties.

        Spark's kafka connector runs the Java client, whose names differ from librdkafka's
        where credentials are concerned: a username and password become ``sasl.jaas.config``
        (PLAIN and SCRAM; set it in ``java_client_options`` for other mechanisms) and a CA file
        becomes a PEM trust store. ``client_options`` (librdkafka's) are not passed on.
        """
        config: dict[str, str] = {"bootstrap.servers": bootstrap_servers}
        if self.security_protocol is not None:
            config["security.protocol"] = self.security_protocol
        if self.sasl_mechanism is not None:
            config["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None and "sasl.jaas.config" not in self.java_client_options:
            config["sasl.jaas.config"] = _jaas_config(
                self.sasl_mechanism or "PLAIN",
                self.sasl_username,
                self.sasl_password.get_secret_value() if self.sasl_password else "",
            )
        if self.ssl_ca_location is not None:
            config["ssl.truststore.type"] = "PEM"
            config["ssl.truststore.location"] = self.ssl_ca_location
        config.update(self.java_client_options)
        return config


_JAAS_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


def _jaas_config(mechanism: str, username: str, password: str) -> str:
    """``sasl.jaas.config`` for a username and password (quotes and backslashes escaped)."""
    module = _JAAS_LOGIN_MODULES.get(mechanism.upper())
    if module is None:
        raise ValueError(
            f"broker.sasl_mechanism {mechanism!r} has no username/password login for Spark's kafka "
            "connector: set broker.java_client_options['sasl.jaas.config']"
        )

    def quoted(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return f"{module} required username={quoted(username)} password={quoted(password)};"


class PostgresSettings(BaseModel):
    """The serving store. Without a DSN pinpipe runs an embedded PostgreSQL server."""

    dsn: SecretStr | None = Field(None, description="postgresql://...; unset means embedded.")
    reader_dsn: SecretStr | None = Field(
        None,
        description="The login of readers (the dashboard): a role granted pinpipe_readonly, which can only"
        " SELECT. Unset: the embedded server makes one (pinpipe_reader); with an external dsn readers then"
        " use dsn in read-only sessions, which a SET can undo.",
    )
    embedded_port: int = Field(0, ge=0, le=65535, description="0 picks a free loopback port.")
    database: str = Field("pinpipe", description="Database the embedded server creates.")
    run_as_user: str = Field(
        "nobody", description="Unprivileged OS user that runs the embedded server when pinpipe runs as root."
    )
    server_home: Path = Field(
        Path("/var/lib/pinpipe"),
        description="Where the embedded server's data directory and binaries go when pinpipe runs as root"
        " and run_as_user cannot enter the directories holding data_dir or the venv (a clone in root's"
        " home); one subdirectory per data_dir, removed by `pinpipe services clean`.",
    )

