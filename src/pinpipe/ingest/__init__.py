"""HTTP -> Kafka: the ingest API (``pinpipe api``).

Wire formats in :mod:`pinpipe.ingest.routes`, the producer in :mod:`pinpipe.ingest.publisher`,
the shared validate-produce-await step in :mod:`pinpipe.ingest.records`.
"""

from pinpipe.ingest.app import create_app

__all__ = ["create_app"]
