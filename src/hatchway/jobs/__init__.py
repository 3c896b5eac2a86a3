"""Running jobs: the job service, one job's life from preparation to outcome, scheduling, policy."""
