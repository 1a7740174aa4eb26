"""One router per wire format, plus health and metrics."""
