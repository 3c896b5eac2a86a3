"""Grading: run a submission against tests and say how well it did.

The pure logic lives here, free of Docker and I/O: the request and result values (`models`), the built-in output
checkers and the parsing of a custom checker's answer (`checkers`), deciding one test's verdict and scoring tests
and groups (`verdicts`), and reading an unpacked problem archive (`problem`).
"""
