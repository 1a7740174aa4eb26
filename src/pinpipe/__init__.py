"""pinpipe: a Lambda-architecture event pipeline for Pinterest-style post events."""

__version__ = "0.1.0"
