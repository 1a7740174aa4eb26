"""The one base class of every service error (broker, PostgreSQL, topics).

Commands that start services catch :class:`ServiceError` to say in one line what failed and
stop what they started; anything else is a bug and keeps its traceback.
"""

from pinpipe.errors import PinpipeError


class ServiceError(PinpipeError):
    """An embedded or configured service could not be started, reached or used."""
