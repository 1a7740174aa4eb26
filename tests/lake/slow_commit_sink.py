"""``python -m tests.lake.slow_commit_sink ...``: the sink process with a 50 ms pause between
writing a round of files and committing it, so that a random SIGKILL often lands in the window
where files are durable but not committed (the case exactly-once is about)."""

from __future__ import annotations

import sys
import time

from pinpipe.lake.__main__ import main
from pinpipe.lake.consumer import LakeSink

_commit = LakeSink.commit


def _slow_commit(self, offsets):
    if offsets:
        time.sleep(0.05)
    return _commit(self, offsets)


LakeSink.commit = _slow_commit

if __name__ == "__main__":
    sys.exit(main())
