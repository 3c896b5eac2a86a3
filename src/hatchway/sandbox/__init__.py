"""The grading sandbox: a small static supervisor (`supervisor.c`) that runs as PID 1 of a grading container and
runs each test program under its own limits, and the Python half of its protocol (`protocol.py`)."""
