"""The ``pinpipe`` command: a thin Typer shell over the library, and its only front door.

Each command parses its flags, builds the settings once (file < env < flags:
:func:`pinpipe.cli.app.settings_for`), calls one library function and prints. Heavy stacks
(Kafka client, PostgreSQL driver, Arrow, Spark, HTTP) are imported inside the commands, so
``pinpipe --help`` starts quickly and imports none of them.

The commands live by what they drive: ``app`` (the root, ``--config``, ``pinpipe config``),
``services`` (the embedded services; ``topics``, ``tail``), ``source`` (the source tables, the
emulator), ``pipeline`` (``api``, ``sink``, ``stream``, ``batch``, ``lake``, ``sql``) and
``platform`` (``up``, ``status``, ``down``, ``dashboard``, ``demo``). ``python -m pinpipe.lake``,
``.speed`` and ``.batch`` run the same commands through :func:`run_command`.
"""

from pinpipe.cli.app import app, run_command

# Importing a command module registers its commands on ``app``, in the order ``--help`` lists them.
from pinpipe.cli import services, source, pipeline, platform  # noqa: E402, F401  isort: skip

__all__ = ["app", "run_command"]
