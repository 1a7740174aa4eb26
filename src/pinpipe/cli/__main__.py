"""``python -m pinpipe.cli ...``: the ``pinpipe`` command."""

from pinpipe.cli import app

app(prog_name="pinpipe")
