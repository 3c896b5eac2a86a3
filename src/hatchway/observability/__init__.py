"""Seeing what the worker does: Prometheus metrics (`metrics`) and the host it runs on (`host`)."""
