"""Fluster's schema and its generated messages: `cluster_pb2` (do not edit; scripts/gen-proto.sh remakes it)."""
