"""The batch layer: raw lake partitions -> clean tables -> the nine answers -> PostgreSQL.

``run_batch`` is the one entry point (``pinpipe batch``, the Airflow DAG's steps); pyspark is
imported only when a job runs.
"""

from pinpipe.batch.job import BatchResult, date_range, run_batch
from pinpipe.batch.quality import QualityError

__all__ = ["BatchResult", "QualityError", "date_range", "run_batch"]
