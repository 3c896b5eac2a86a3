"""The judge's pure logic, free of Docker and I/O: the grading request language (`request`), its limits (`limits`),
what a grading found (`report`), the built-in output checkers and the parsing of a custom checker's answer
(`checkers`), deciding one test's verdict and scoring tests and groups (`verdicts`), reading an unpacked problem
archive (`problem`), and the language profiles (`profiles`).
"""
