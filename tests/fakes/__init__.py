"""Fake masters the worker pulls work from, speaking real HTTP on 127.0.0.1."""
