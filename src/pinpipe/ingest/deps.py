"""FastAPI dependencies of the routes: the app's settings, publisher, ingestor and streams.

They read ``app.state`` (filled by the app's lifespan), so a test can swap any of them with
``app.dependency_overrides``. They are ``async`` on purpose: FastAPI runs plain ``def``
dependencies in a thread pool, which costs more than the whole lookup.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from pinpipe.config import IngestSettings, Settings
from pinpipe.ingest.publisher import Publisher
from pinpipe.ingest.records import Ingestor
from pinpipe.ingest.streams import StreamAdmin


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_ingest_settings(request: Request) -> IngestSettings:
    return request.app.state.settings.ingest


async def get_publisher(request: Request) -> Publisher:
    return request.app.state.publisher


async def get_ingestor(request: Request) -> Ingestor:
    return request.app.state.ingestor


async def get_stream_admin(request: Request) -> StreamAdmin:
    return request.app.state.streams


SettingsDep = Annotated[Settings, Depends(get_settings)]
IngestSettingsDep = Annotated[IngestSettings, Depends(get_ingest_settings)]
PublisherDep = Annotated[Publisher, Depends(get_publisher)]
IngestorDep = Annotated[Ingestor, Depends(get_ingestor)]
StreamAdminDep = Annotated[StreamAdmin, Depends(get_stream_admin)]
