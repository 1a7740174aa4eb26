"""Serving: the PostgreSQL schema shared by the speed and batch layers (:mod:`.schema`), the
comparison of the two layers (:mod:`.reconcile`) and the dashboard."""
