"""Contract tests: what every implementation of a seam promises, written once and run against each.

A contract is a class of test methods with no `Test` prefix (so pytest collects it only through a subclass) and a
`subject` fixture left to the subclass. `tests/unit` subclasses each with the fake from `src/` and `tests/integration`
with the real thing, so a fake that drifts from the real implementation fails in the unit tier, and a real one that
drifts from what the fakes (and every unit test built on them) assume fails in the integration tier.

Where a fake cannot do what the real thing does (a scripted engine runs no code), a capability flag on the fake's
class says so; the contract asserts the documented difference, or the test lives in a class of its own that only
the real implementation's tests take (`CodeRunningEngineContract`, `BuildingImagesContract`): nothing is skipped.
"""
