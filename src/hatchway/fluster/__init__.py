"""Fluster's wire protocol (issue 19): the cluster controller's messages and Connect RPC, as a worker speaks them.

`proto/` holds the schema (`cluster.proto`, the real field numbers) and its generated messages (`cluster_pb2`,
made by scripts/gen-proto.sh and committed); `connect` encodes and decodes Connect unary requests, answers and
errors over HTTP. docs/fluster-plan.md records what the real system does and how hatchway meets it.
"""
