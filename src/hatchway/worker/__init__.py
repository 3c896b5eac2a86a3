"""The worker: composition (bootstrap), start and drain, background loops, callbacks, registration."""
