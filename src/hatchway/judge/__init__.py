"""The judge's pure logic: grading requests and reports, limits, checkers, verdicts, problem formats, profiles."""
