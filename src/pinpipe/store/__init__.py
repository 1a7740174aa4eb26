"""PostgreSQL: the schema and its versioned migrations, the batch-run records, the read queries.

The bottom layer of what pinpipe keeps in PostgreSQL: the batch and speed layers, the dashboard
and ``pinpipe up`` import it; it imports none of them (each function is given a DSN or an open
connection).
"""
