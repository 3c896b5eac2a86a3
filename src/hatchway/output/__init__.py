"""What jobs print and leave: capture, line times, log filters, lifecycle events, artifacts."""
