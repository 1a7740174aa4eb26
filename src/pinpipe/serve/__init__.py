"""Serving: the PostgreSQL schema shared by the speed and batch layers (:mod:`.schema`)."""
