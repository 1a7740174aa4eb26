"""Starting, stopping and reporting the embedded services: ``pinpipe services up`` / ``down`` /
``status`` / ``clean``, and what ``pinpipe up`` starts and stops (:mod:`.resolve` finds which
broker and PostgreSQL a command uses).

An embedded service started here is recorded in ``<data_dir>/run/<name>.json`` and stopped
by ``down`` in reverse order (the broker before the S3 server of its log); one configured
external, or found running, is reported and left alone.
"""

from __future__ import annotations

from collections.abc import Callable

from pinpipe.config import Settings
from pinpipe.processes import pid_is_alive, terminate_pid
from pinpipe.services.broker import broker_is_healthy
from pinpipe.services.broker_s3 import (
    load_credentials,
    s3_is_healthy,
)
from pinpipe.services.pg_common import mask_dsn, postgres_is_healthy
from pinpipe.services.resolve import (
    BROKER,
    BROKER_S3,
    POSTGRES,
    broker_log_is_durable,
    broker_s3_home,
    broker_s3_server,
    embedded_broker,
    embedded_postgres,
    placement,
    running_broker,
    running_broker_s3,
    s3_storage,
    storage_detail,
)
from pinpipe.services.spark_cluster import MASTER as SPARK_MASTER
from pinpipe.services.spark_cluster import cluster_down, cluster_status, cluster_up
from pinpipe.services.state import ServiceRecord, read_record, remove_record, write_record
from pinpipe.services.status import EMBEDDED, EXTERNAL, ServiceStatus
from pinpipe.services.topics import ensure_pipeline_topics


def services_up(
    settings: Settings, event: Callable[[str, str], None] | None = None
) -> list[ServiceStatus]:
    """Start the detached embedded broker and PostgreSQL (unless external or already running),
    and the embedded Spark cluster with ``batch.spark_workers > 0``
    (:mod:`pinpipe.services.spark_cluster`), record them in ``settings.run_dir`` and create the
    pipeline topics.

    All or nothing: when a step fails (or Ctrl-C arrives), the services this call started are
    stopped before the error propagates (``event`` is told); those that were already running
    are left as they were.
    """
    started: list[str] = []
    try:
        statuses = _broker_s3_up(settings, started)
        statuses.append(_broker_up(settings, started))
        statuses.append(_postgres_up(settings, started))
        return [*statuses, *cluster_up(settings, started)]  # batch.spark_workers > 0 only
    except BaseException:
        stop_embedded(settings, started, event)
        raise


def restart_embedded_broker(settings: Settings, port: int) -> ServiceStatus:
    """Start the detached embedded broker again on ``port`` after it died (``pinpipe up``
    supervises it), so that its clients reconnect by themselves; its pipeline topics are
    created again. With memory storage it comes back **empty**: a new log with a new cluster id,
    which the lake sink and the stream job detect and report (:mod:`pinpipe.lake.logs`); with
    ``broker.storage = s3`` it keeps its log (its S3 server is started again first if needed)."""
    dead = read_record(settings.run_dir, BROKER)
    if dead is not None and not pid_is_alive(dead.pid):
        remove_record(settings.run_dir, BROKER)
    _broker_s3_up(settings, [])
    return _broker_up(settings, [], port=port)


def _broker_s3_up(settings: Settings, started: list[str]) -> list[ServiceStatus]:
    """The broker's S3 server (``broker.storage = s3`` only), started unless running."""
    if not broker_log_is_durable(settings):
        return []
    home = broker_s3_home(settings)
    record = running_broker_s3(settings)
    if record is not None:
        detail = f"already running (pid {record.pid}); objects in {home / 'objects'}"
        return [ServiceStatus(BROKER_S3, EMBEDDED, record.address, True, detail)]
    broker = running_broker(settings)
    if broker is not None:  # its S3 server is gone: that broker can neither write nor read
        terminate_pid(broker.pid)
        remove_record(settings.run_dir, BROKER)
    server = broker_s3_server(settings)
    started.append(BROKER_S3)  # before start: a start interrupted half-way is stopped too
    server.start(detach=True)
    assert server.pid is not None and server.port is not None
    address = f"127.0.0.1:{server.port}"
    write_record(settings.run_dir, ServiceRecord.now(BROKER_S3, server.pid, address))
    detail = f"started (pid {server.pid}); objects in {server.objects_dir}"
    return [ServiceStatus(BROKER_S3, EMBEDDED, address, True, detail, started_now=True)]


def _broker_up(settings: Settings, started: list[str], port: int | None = None) -> ServiceStatus:
    configured = settings.broker.bootstrap_servers
    new_log = False
    if configured:
        mode, bootstrap, detail = EXTERNAL, configured, "configured"
    else:
        mode, record = EMBEDDED, running_broker(settings)
        if record is not None:
            bootstrap, detail = record.address, f"already running (pid {record.pid})"
        else:
            storage = None
            if broker_log_is_durable(settings):
                s3_record = running_broker_s3(settings)
                assert s3_record is not None, "_broker_s3_up runs first"
                storage = s3_storage(settings, s3_record.address)
            broker, new_log = embedded_broker(settings, storage, port)
            broker.start(detach=True)
            assert broker.pid is not None
            bootstrap = broker.bootstrap_servers
            write_record(settings.run_dir, ServiceRecord.now(BROKER, broker.pid, bootstrap))
            started.append(BROKER)
            kept = "" if storage is None else (", a new log" if new_log else ", its log kept")
            detail = f"started (pid {broker.pid}, {storage_detail(settings)}{kept})"
    created = ensure_pipeline_topics(settings, bootstrap)
    new = sum(1 for outcome in created.values() if outcome == "created")
    detail += f"; {len(created)} topics ({new} created)"
    return ServiceStatus(
        BROKER, mode, bootstrap, True, detail, started_now=BROKER in started, new_log=new_log
    )


def _postgres_up(settings: Settings, started: list[str]) -> ServiceStatus:
    if settings.postgres.dsn is not None:
        dsn = settings.postgres.dsn.get_secret_value()
        return ServiceStatus(POSTGRES, EXTERNAL, mask_dsn(dsn), postgres_is_healthy(dsn), "configured")
    server = embedded_postgres(settings)
    was_running = server.is_running()
    if not was_running:
        started.append(POSTGRES)  # before start: a start interrupted half-way is stopped too
    server.start()
    assert server.pid is not None and server.port is not None
    write_record(
        settings.run_dir, ServiceRecord.now(POSTGRES, server.pid, f"127.0.0.1:{server.port}")
    )
    detail = f"{'already running' if was_running else 'started'} (pid {server.pid}); {placement(server)}"
    return ServiceStatus(
        POSTGRES, EMBEDDED, server.masked_dsn, True, detail, started_now=not was_running
    )


def stop_embedded(
    settings: Settings, names: list[str], event: Callable[[str, str], None] | None = None
) -> None:
    """Stop the embedded services ``names`` (those a ``services_up`` reported ``started_now``)."""
    tell = event or (lambda name, message: None)
    if SPARK_MASTER in names:  # first: its jobs' executors write to PostgreSQL
        for status in cluster_down(settings):
            tell(status.name, "stopped")
    if POSTGRES in names:
        server = embedded_postgres(settings)
        server.stop()
        remove_record(settings.run_dir, POSTGRES)
        tell(POSTGRES, "stopped")
    if BROKER in names:
        record = running_broker(settings)
        if record is not None:
            terminate_pid(record.pid)
        remove_record(settings.run_dir, BROKER)
        tell(BROKER, "stopped")
    if BROKER_S3 in names:  # after the broker, which writes to it until it stops
        _stop_broker_s3(settings)
        tell(BROKER_S3, "stopped")


def _stop_broker_s3(settings: Settings) -> ServiceRecord | None:
    """Stop the broker's S3 server if it runs; returns its record (None: it was not running)."""
    record = running_broker_s3(settings)
    if record is not None:
        terminate_pid(record.pid)
    remove_record(settings.run_dir, BROKER_S3)
    return record


def services_down(settings: Settings) -> list[ServiceStatus]:
    """Stop the embedded services ``services_up`` started; external ones are left alone.

    Nothing is health-checked here: every returned status has ``healthy=False``.
    """
    statuses: list[ServiceStatus] = cluster_down(settings)
    configured = settings.broker.bootstrap_servers
    if configured:
        statuses.append(
            ServiceStatus(BROKER, EXTERNAL, configured, False, "external: left running")
        )
    else:
        record = running_broker(settings)
        if record is not None:
            terminate_pid(record.pid)
            detail = f"stopped (pid {record.pid})"
        else:
            detail = "not running"
        remove_record(settings.run_dir, BROKER)
        address = record.address if record else ""
        statuses.append(ServiceStatus(BROKER, EMBEDDED, address, False, detail))
        # Also when storage is memory now: a server left by an earlier s3 setting is ours.
        s3_record = _stop_broker_s3(settings)
        if s3_record is not None or broker_log_is_durable(settings):
            detail = f"stopped (pid {s3_record.pid})" if s3_record else "not running"
            address = s3_record.address if s3_record else ""
            statuses.append(ServiceStatus(BROKER_S3, EMBEDDED, address, False, detail))

    if settings.postgres.dsn is not None:
        masked = mask_dsn(settings.postgres.dsn.get_secret_value())
        statuses.append(ServiceStatus(POSTGRES, EXTERNAL, masked, False, "external: left running"))
    else:
        server = embedded_postgres(settings)
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
    """Health of the broker and PostgreSQL pinpipe would use, embedded or external, and of the
    embedded Spark cluster when one runs or is configured."""
    statuses: list[ServiceStatus] = []
    configured = settings.broker.bootstrap_servers
    if configured:
        healthy = broker_is_healthy(settings.broker.client_config(configured))
        detail = "" if healthy else "no answer to a metadata request"
        statuses.append(ServiceStatus(BROKER, EXTERNAL, configured, healthy, detail))
    else:
        if broker_log_is_durable(settings):
            statuses.append(_broker_s3_status(settings))
        record = running_broker(settings)
        if record is None:
            statuses.append(ServiceStatus(BROKER, EMBEDDED, "", False, "not running"))
        else:
            healthy = broker_is_healthy(settings.broker.client_config(record.address))
            detail = f"pid {record.pid} since {record.started_at}, {storage_detail(settings)}"
            if not healthy:
                detail += "; no answer to a metadata request"
            statuses.append(ServiceStatus(BROKER, EMBEDDED, record.address, healthy, detail))

    if settings.postgres.dsn is not None:
        dsn = settings.postgres.dsn.get_secret_value()
        healthy = postgres_is_healthy(dsn)
        detail = "" if healthy else "connection failed"
        statuses.append(ServiceStatus(POSTGRES, EXTERNAL, mask_dsn(dsn), healthy, detail))
    else:
        server = embedded_postgres(settings)
        if not server.attach():
            detail = "not running" + (f"; {placement(server)}" if server.relocated else "")
            statuses.append(ServiceStatus(POSTGRES, EMBEDDED, "", False, detail))
        else:
            healthy = postgres_is_healthy(server.dsn)
            detail = f"pid {server.pid}" + ("" if healthy else "; connection failed")
            detail += f"; {placement(server)}"
            statuses.append(ServiceStatus(POSTGRES, EMBEDDED, server.masked_dsn, healthy, detail))
    return [*statuses, *cluster_status(settings)]


def _broker_s3_status(settings: Settings) -> ServiceStatus:
    home = broker_s3_home(settings)
    record = running_broker_s3(settings)
    if record is None:
        return ServiceStatus(BROKER_S3, EMBEDDED, "", False, f"not running; objects in {home / 'objects'}")
    healthy = s3_is_healthy(f"http://{record.address}", load_credentials(home))
    detail = f"pid {record.pid} since {record.started_at}; objects in {home / 'objects'}"
    if not healthy:
        detail += "; no answer to HeadBucket"
    return ServiceStatus(BROKER_S3, EMBEDDED, record.address, healthy, detail)


def services_clean(settings: Settings) -> list[str]:
    """Stop the embedded services and remove what pinpipe placed outside ``data_dir`` for them
    (the relocated PostgreSQL data and binaries, see :mod:`pinpipe.services.pg_home`); returns
    what was removed. ``data_dir`` itself is the caller's (``make clean`` removes it)."""
    services_down(settings)
    if settings.postgres.dsn is not None:
        return []
    return [str(path) for path in embedded_postgres(settings).remove_relocated()]
