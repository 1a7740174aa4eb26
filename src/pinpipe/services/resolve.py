"""Which broker and PostgreSQL a command uses (:mod:`.lifecycle` starts, stops and reports them).

For each service: the configured external one if set; else the embedded one ``pinpipe up``
left running (found through its run record / ``postmaster.pid``); else an embedded one started
just for the duration of a ``with`` block. Embedded files live under ``settings.data_dir``:
``run/`` (records), ``logs/broker.log``, ``postgres/`` (+ ``postgres.password``), and with
``broker.storage = s3`` the broker's log in ``broker-s3/`` (served by the S3 server recorded as
``broker-s3``, which starts before the broker and stops after it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from pinpipe.config import Settings
from pinpipe.processes import process_cmdline
from pinpipe.services.broker import EmbeddedBroker, new_cluster_id
from pinpipe.services.broker_s3 import MODULE as BROKER_S3_MODULE
from pinpipe.services.broker_s3 import (
    BrokerS3Server,
    S3Storage,
    load_credentials,
    read_cluster_id,
    stored_cluster_id,
)
from pinpipe.services.pg_common import PostgresError
from pinpipe.services.postgres import EmbeddedPostgres
from pinpipe.services.state import ServiceRecord, read_record, remove_record
from pinpipe.services.topics import ensure_pipeline_topics

BROKER = "broker"
BROKER_S3 = "broker-s3"
POSTGRES = "postgres"


def embedded_postgres(settings: Settings) -> EmbeddedPostgres:
    """The embedded server of ``settings`` (not started)."""
    pg = settings.postgres
    return EmbeddedPostgres(
        settings.data_dir / "postgres",
        port=pg.embedded_port,
        database=pg.database,
        run_as_user=pg.run_as_user,
        server_home=pg.server_home,
    )


def running_postgres(settings: Settings) -> tuple[str, int | None] | None:
    """The DSN of the PostgreSQL already there, and the embedded server's current pid: the
    configured one (pid None), else the embedded one found running; None when it is not."""
    if settings.postgres.dsn is not None:
        return settings.postgres.dsn.get_secret_value(), None
    server = embedded_postgres(settings)
    if not server.attach():
        return None
    return server.dsn, server.pid


def placement(server: EmbeddedPostgres) -> str:
    """Where the server's data lives, said plainly when it is not where the settings put it."""
    if server.relocated:
        return (
            f"data in {server.data_dir} (the server user {server.run_as_user!r} cannot enter "
            f"{server.unreachable})"
        )
    return f"data in {server.data_dir}"


def running_broker(settings: Settings) -> ServiceRecord | None:
    """The record of the detached embedded broker, if it is alive and really that broker."""
    record = read_record(settings.run_dir, BROKER)
    if record is not None and f"tcp://{record.address}" not in process_cmdline(record.pid):
        remove_record(settings.run_dir, BROKER)  # the pid now belongs to another program
        return None
    return record


def broker_log_is_durable(settings: Settings) -> bool:
    """True if the embedded broker's log outlives the broker (``broker.storage = s3``).

    Then a broker started again is the same log with the same offsets and cluster id, and what
    was derived from it (the lake's raw files, the stream checkpoint) stays valid; with memory
    storage every start is a new, empty log. False for a configured (external) broker.
    """
    return not settings.broker.bootstrap_servers and settings.broker.storage == "s3"


def broker_s3_home(settings: Settings) -> Path:
    """Where the durable broker log lives: ``<data_dir>/broker-s3`` (objects, credentials, id)."""
    return settings.data_dir / "broker-s3"


def running_broker_s3(settings: Settings) -> ServiceRecord | None:
    """The record of the detached S3 server of the broker, if it is alive and really that server."""
    record = read_record(settings.run_dir, BROKER_S3)
    if record is None:
        return None
    command = process_cmdline(record.pid)
    port = record.address.rsplit(":", 1)[-1]
    if BROKER_S3_MODULE not in command or f"--port {port}" not in command:
        remove_record(settings.run_dir, BROKER_S3)
        return None
    return record


def s3_storage(settings: Settings, address: str) -> S3Storage:
    return S3Storage(f"http://{address}", load_credentials(broker_s3_home(settings)))


def broker_s3_server(settings: Settings) -> BrokerS3Server:
    return BrokerS3Server(
        broker_s3_home(settings), settings.data_dir / "logs", port=settings.broker.embedded_s3_port
    )


def embedded_broker(settings: Settings, storage: S3Storage | None,
                     port: int | None = None) -> tuple[EmbeddedBroker, bool]:  # fmt: skip
    """The embedded broker of ``settings`` on ``storage`` (None: memory), not started, and
    whether its log is new (always with memory; with s3, when it had no cluster id yet).
    ``port``: the one a restarted broker had, else ``broker.embedded_port``."""
    logs, port = settings.data_dir / "logs", port or settings.broker.embedded_port
    if storage is None:
        return EmbeddedBroker(logs, port=port), True
    fresh = new_cluster_id()
    cluster_id = stored_cluster_id(broker_s3_home(settings), fresh)
    broker = EmbeddedBroker(logs, port=port, cluster_id=cluster_id, storage=storage)
    return broker, cluster_id == fresh


@contextmanager
def kafka_bootstrap(settings: Settings) -> Iterator[str]:
    """Bootstrap servers for the with-block.

    ``broker.bootstrap_servers`` if configured; else the detached embedded broker recorded in
    ``settings.run_dir``; else an embedded broker started now (on its durable log with
    ``broker.storage = s3``, whose S3 server is started too unless running), with the pipeline
    topics created, and stopped when the block ends.
    """
    configured = settings.broker.bootstrap_servers
    if configured:
        yield configured
        return
    record = running_broker(settings)
    if record is not None:
        yield record.address
        return
    with ExitStack() as stack:
        storage = None
        if broker_log_is_durable(settings):
            s3_record = running_broker_s3(settings)
            if s3_record is None:
                server = stack.enter_context(broker_s3_server(settings))
                storage = server.storage()
            else:
                storage = s3_storage(settings, s3_record.address)
        broker = stack.enter_context(embedded_broker(settings, storage)[0])
        ensure_pipeline_topics(settings, broker.bootstrap_servers)
        yield broker.bootstrap_servers


def existing_kafka_bootstrap(settings: Settings) -> str | None:
    """Bootstrap servers of a broker that is already there, for commands that only look.

    ``broker.bootstrap_servers`` if configured; else the detached embedded broker recorded in
    ``settings.run_dir``; else None: nothing is started (a fresh embedded broker is empty).
    """
    configured = settings.broker.bootstrap_servers
    if configured:
        return configured
    record = running_broker(settings)
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
    server = embedded_postgres(settings)
    server.start()
    try:
        yield server.dsn
    finally:
        if not server.reused:
            server.stop()


def reader_dsn(settings: Settings, dsn: str) -> str | None:
    """The DSN readers such as the dashboard log in with: a role that can only SELECT.

    ``postgres.reader_dsn`` if configured; else, on the embedded server, its ``pinpipe_reader``
    login (made now, with a password of its own); else None: an external server without a
    reader login configured, whose readers then use ``dsn`` in read-only sessions.
    """
    if settings.postgres.reader_dsn is not None:
        return settings.postgres.reader_dsn.get_secret_value()
    if settings.postgres.dsn is not None:
        return None
    from pinpipe.store.schema import READER_LOGIN, ensure_reader_login

    server = embedded_postgres(settings)
    if not server.attach():
        raise PostgresError(f"the embedded PostgreSQL is not running ({server.data_dir})")
    ensure_reader_login(dsn, server.login_password(READER_LOGIN))
    return server.login_dsn(READER_LOGIN)


def storage_detail(settings: Settings) -> str:
    if not broker_log_is_durable(settings):
        return "memory storage"
    return f"s3 storage, cluster id {read_cluster_id(broker_s3_home(settings))}"
