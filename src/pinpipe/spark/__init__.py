"""The Spark session the batch and the speed layers share: where it runs (``local[N]``, the
embedded cluster or a cluster's master URL), shipping pinpipe to executors, event logs."""
