"""spark-submit entry point of the batch job (spark-submit needs a file; the code is the wheel's):
``python -m pinpipe.batch``, which is ``pinpipe batch --json``.

    spark-submit --master <master> --py-files pinpipe-<version>-py3-none-any.whl \
        deploy/spark/pinpipe_batch.py --all
"""

import sys

from pinpipe.batch.__main__ import main

sys.exit(main())
