"""Ship pinpipe to a cluster's executors: the driver's own ``pinpipe`` package, zipped.

An executor's Python must import the code of the job's functions (the Kafka source's
``read()``, the cleaning rules' Python parts) exactly as the driver has it. Choices:

- **executors run the driver's venv** (``PYSPARK_PYTHON``): enough for the embedded cluster on
  this machine, but it makes them import whatever ``pinpipe`` that venv resolves, which need not
  be the driver's (an editable install points at one checkout; the driver may run another via
  ``PYTHONPATH``), and a remote machine has no such venv.
- **a wheel built from the installed package** (``pip wheel``): seconds per start, and needs the
  source tree and a build backend on the driver.
- **a zip of the imported package** (chosen): the files of ``pinpipe.__file__``'s directory,
  which is what a pure-Python wheel holds, built in milliseconds on every session start and
  handed to ``SparkContext.addPyFile``; each executor fetches it from the driver and puts it
  first on ``sys.path`` (ahead of site-packages), so executors on any machine run the driver's
  pinpipe, byte for byte. The zip's name carries a hash of its content.

What is not shipped: pinpipe's dependencies (pyarrow, confluent-kafka, pydantic, ...), which have
compiled parts for the executor's platform. The executors' Python must have them installed: on
the embedded cluster it is this venv (``PYSPARK_PYTHON``, same machine); on a real cluster set
``spark.pyspark.python`` (``batch.spark_conf``) to an environment made with ``pip install pinpipe``
(or ship one with ``spark.archives`` and venv-pack). Spark-submit users may pass the same zip
with ``--py-files`` instead; it is then added once more, harmlessly.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from pinpipe.config import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def package_zip(out_dir: Path) -> Path:
    """``<out_dir>/pinpipe-<hash>.zip`` of the imported ``pinpipe`` package (made if missing)."""
    import pinpipe

    root = Path(pinpipe.__file__).resolve().parent
    files = sorted(
        path for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo")
    )  # fmt: skip
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    target = Path(out_dir) / f"pinpipe-{digest.hexdigest()[:12]}.zip"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".zip.tmp")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in files:
                archive.write(path, Path("pinpipe") / path.relative_to(root))
        partial.replace(target)
    return target


def ship_pinpipe(spark: SparkSession, settings: Settings) -> Path:
    """Add the package zip to the session's Python files; returns the zip."""
    shipped = package_zip(settings.data_dir / "spark" / "py-files")
    spark.sparkContext.addPyFile(str(shipped))
    return shipped
