"""Grading at run time: admit a grading, fetch its problem archive, compile once in a prepared sandbox, run every
test and judge it (`runner`, `session`, `sandboxes`, `workspace`, `custom_checker`), and the facade job sources
talk to (`service`). The pure logic it judges with, free of Docker and I/O, is `hatchway.judge`.
"""
