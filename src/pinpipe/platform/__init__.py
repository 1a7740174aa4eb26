"""``pinpipe up`` and ``pinpipe demo``: start every component, supervise it, drain and stop it.

The top layer: it imports the stages and the services; nothing imports it but the CLI.
"""
