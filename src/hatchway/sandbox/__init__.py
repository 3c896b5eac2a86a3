"""The grading sandbox: a small static supervisor (C, in `supervisor/`, one concern a file) that runs as PID 1 of a
grading container and runs each test program under its own limits, the Python half of its protocol (`protocol.py`),
and the one recipe that builds it (`binary.py`)."""
