"""Which broker and PostgreSQL a command uses, and ``pinpipe up`` / ``down`` / ``status``.

For each service: the configured external one if set; else the embedded one ``pinpipe up``
left running (found through its run record / ``postmaster.pid``); else an embedded one started
just for the duration of a ``with`` block. Embedded files live under ``settings.data_dir``:
``run/`` (records), ``logs/broker.log``, ``postgres/`` (+ ``postgres.password``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pinpipe.config import Settings
from pinpipe.events import all_topics
from pinpipe.services.broker import EmbeddedBroker, broker_is_healthy
from pinpipe.services.postgres import EmbeddedPostgres, mask_dsn, postgres_is_healthy
from pinpipe.services.state import (
    ServiceRecord,
    process_cmdline,
    read_record,
    remove_record,
    terminate_pid,
    write_record,
)
from pinpipe.services.topics import ensure_topics

BROKER = "broker"
POSTGRES = "postgres"
EMBEDDED = "embedded"
EXTERNAL = "external"


@dataclass(frozen=True)
class ServiceStatus:
    """One service as shown by ``pinpipe status``; ``address`` never holds a secret."""

    name: str
    mode: str  # "embedded" | "external"
    address: str
    healthy: bool
    detail: str


def _embedded_postgres(settings: Settings) -> EmbeddedPostgres:
    pg = settings.postgres
    return EmbeddedPostgres(
        settings.data_dir / "postgres",
        port=pg.embedded_port,
        database=pg.database,
        run_as_user=pg.run_as_user,
    )


def _running_broker(settings: Settings) -> ServiceRecord | None:
    """The record of the detached embedded broker, if it is alive and really that broker."""
    record = read_record(settings.run_dir, BROKER)
    if record is not None and f"tcp://{record.address}" not in process_cmdline(record.pid):
        remove_record(settings.run_dir, BROKER)  # the pid now belongs to another program
        return None
    return record


def _ensure_pipeline_topics(settings: Settings, bootstrap: str) -> dict[str, str]:
    broker = settings.broker
    return ensure_topics(
        broker.client_config(bootstrap),
        all_topics(broker.topic_prefix),
        broker.partitions,
        broker.replication_factor,
    )


@contextmanager
def kafka_bootstrap(settings: Settings) -> Iterator[str]:
    """Bootstrap servers for the with-block.

    ``broker.bootstrap_servers`` if configured; else the detached embedded broker recorded in
    ``settings.run_dir``; else an embedded broker (memory storage) started now, with the
    pipeline topics created, and stopped when the block ends.
    """
    configured = settings.broker.bootstrap_servers
    if configured:
        yield configured
        return
    record = _running_broker(settings)
    if record is not None:
        yield record.address
        return
    with EmbeddedBroker(settings.data_dir / "logs", port=settings.broker.embedded_port) as broker:
        _ensure_pipeline_topics(settings, broker.bootstrap_servers)
        yield broker.bootstrap_servers


def existing_kafka_bootstrap(settings: Settings) -> str | None:
    """Bootstrap servers of a broker that is already there, for commands that only look.

    ``broker.bootstrap_servers`` if configured; else the detached embedded broker recorded in
    ``settings.run_dir``; else None: nothing is started (a fresh embedded broker is empty).
    """
    configured = settings.broker.bootstrap_servers
    if configured:
        return configured
    record = _running_broker(settings)
    return record.address if record is not None else None


@contextmanager
def postgres_dsn(settings: Settings) -> Iterator[str]:
    """A PostgreSQL DSN for the with-block (contains the password: never print it).

    ``postgres.dsn`` if configured; else the embedded server already running for
    ``data_dir/postgres``; else that server started now and stopped when the block ends.
    """
    if settings.postgres.dsn is not None:
        yield settings.postgres.dsn.get_secret_value()
        return
    server = _embedded_postgres(settings)
    server.start()
    try:
        yield server.dsn
    finally:
        if not server.reused:
            server.stop()


def services_up(settings: Settings) -> list[ServiceStatus]:
    """Start the detached embedded broker and PostgreSQL (unless external or already running),
    record them in ``settings.run_dir`` and create the pipeline topics.

    If PostgreSQL fails, the broker started here stays up and recorded; ``services_down``
    stops it.
    """
    statuses: list[ServiceStatus] = []
    configured = settings.broker.bootstrap_servers
    if configured:
        mode, bootstrap, detail = EXTERNAL, configured, "configured"
    else:
        mode, record = EMBEDDED, _running_broker(settings)
        if record is not None:
            bootstrap, detail = record.address, f"already running (pid {record.pid})"
        else:
            broker = EmbeddedBroker(settings.data_dir / "logs", port=settings.broker.embedded_port)
            broker.start(detach=True)
            assert broker.pid is not None
            bootstrap = broker.bootstrap_servers
            write_record(settings.run_dir, ServiceRecord.now(BROKER, broker.pid, bootstrap))
            detail = f"started (pid {broker.pid}, memory storage)"
    created = _ensure_pipeline_topics(settings, bootstrap)
    new = sum(1 for outcome in created.values() if outcome == "created")
    detail += f"; {len(created)} topics ({new} created)"
    statuses.append(ServiceStatus(BROKER, mode, bootstrap, True, detail))

    if settings.postgres.dsn is not None:
        dsn = settings.postgres.dsn.get_secret_value()
        statuses.append(
            ServiceStatus(POSTGRES, EXTERNAL, mask_dsn(dsn), postgres_is_healthy(dsn), "configured")
        )
    else:
        server = _embedded_postgres(settings)
        server.start()
        assert server.pid is not None and server.port is not None
        write_record(
            settings.run_dir, ServiceRecord.now(POSTGRES, server.pid, f"127.0.0.1:{server.port}")
        )
        detail = "already running" if server.reused else "started"
        statuses.append(
            ServiceStatus(
                POSTGRES, EMBEDDED, server.masked_dsn, True, f"{detail} (pid {server.pid})"
            )
        )
    return statuses


def services_down(settings: Settings) -> list[ServiceStatus]:
    """Stop the embedded services ``services_up`` started; external ones are left alone.

    Nothing is health-checked here: every returned status has ``healthy=False``.
    """
    statuses: list[ServiceStatus] = []
    configured = settings.broker.bootstrap_servers
    if configured:
        statuses.append(
            ServiceStatus(BROKER, EXTERNAL, configured, False, "external: left running")
        )
    else:
        record = _running_broker(settings)
        if record is not None:
            terminate_pid(record.pid)
            detail = f"stopped (pid {record.pid})"
        else:
            detail = "not running"
        remove_record(settings.run_dir, BROKER)
        address = record.address if record else ""
        statuses.append(ServiceStatus(BROKER, EMBEDDED, address, False, detail))

    if settings.postgres.dsn is not None:
        masked = mask_dsn(settings.postgres.dsn.get_secret_value())
        statuses.append(ServiceStatus(POSTGRES, EXTERNAL, masked, False, "external: left running"))
    else:
        server = _embedded_postgres(settings)
        if server.attach():
            address, pid = server.masked_dsn, server.pid
            server.stop()
            detail = f"stopped (pid {pid})"
        else:
            address, detail = "", "not running"
        remove_record(settings.run_dir, POSTGRES)
        statuses.append(ServiceStatus(POSTGRES, EMBEDDED, address, False, detail))
    return statuses


def services_status(settings: Settings) -> list[ServiceStatus]:
    """Health of the broker and PostgreSQL pinpipe would use, embedded or external."""
    statuses: list[ServiceStatus] = []
    configured = settings.broker.bootstrap_servers
    if configured:
        healthy = broker_is_healthy(settings.broker.client_config(configured))
        detail = "" if healthy else "no answer to a metadata request"
        statuses.append(ServiceStatus(BROKER, EXTERNAL, configured, healthy, detail))
    else:
        record = _running_broker(settings)
        if record is None:
            statuses.append(ServiceStatus(BROKER, EMBEDDED, "", False, "not running"))
        else:
            healthy = broker_is_healthy(settings.broker.client_config(record.address))
            detail = f"pid {record.pid} since {record.started_at}, memory storage"
            if not healthy:
                detail += "; no answer to a metadata request"
            statuses.append(ServiceStatus(BROKER, EMBEDDED, record.address, healthy, detail))

    if settings.postgres.dsn is not None:
        dsn = settings.postgres.dsn.get_secret_value()
        healthy = postgres_is_healthy(dsn)
        detail = "" if healthy else "connection failed"
        statuses.append(ServiceStatus(POSTGRES, EXTERNAL, mask_dsn(dsn), healthy, detail))
    else:
        server = _embedded_postgres(settings)
        if not server.attach():
            statuses.append(ServiceStatus(POSTGRES, EMBEDDED, "", False, "not running"))
        else:
            healthy = postgres_is_healthy(server.dsn)
            detail = f"pid {server.pid}" + ("" if healthy else "; connection failed")
            statuses.append(ServiceStatus(POSTGRES, EMBEDDED, server.masked_dsn, healthy, detail))
    return statuses
