"""The `hatchway` command: serve, run one job locally, and talk to a running worker."""
