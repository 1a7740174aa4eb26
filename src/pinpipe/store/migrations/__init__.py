"""Versioned SQL migrations of the ``pinpipe`` PostgreSQL schema: ``NNNN_name.sql``, applied in order."""
