"""``pinpipe up`` and ``pinpipe demo``: start every component, supervise it, drain and stop it.

The top layer: it imports the stages and the services; nothing imports it but the CLI. In the
order a run uses them:

- :mod:`.state`: the run dir's record (``up.json``, ``up-last-run.json``), a killed up's leftovers;
- :mod:`.run`: one run's options, components and events, starting and stopping its services;
- :mod:`.specs`: the child processes, each a ``pinpipe <command>``, with ports and health checks;
- :mod:`.supervisor`, :mod:`.broker_watch`: restart what dies (the embedded broker included);
- :mod:`.schedule`: the batch job every ``--batch-every``, the end of a bounded run;
- :mod:`.drain`: wait until the consumers have every record, the final figures;
- :mod:`.up`: the run loop and its ordered shutdown;
- :mod:`.control`: ``--detach``, ``status`` and ``down`` from another terminal;
- :mod:`.demo`, :mod:`.demo_counts`: ``pinpipe demo`` and the counts that check its summary.
"""
