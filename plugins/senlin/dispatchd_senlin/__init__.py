"""The bridge from a Senlin engine to dispatchd: ``event_dispatchers = dispatchd``."""
