"""Serving: the dashboard (it reads :mod:`pinpipe.store` and is told its metric URLs) and the
comparison of the speed and batch layers (:mod:`.reconcile`)."""
