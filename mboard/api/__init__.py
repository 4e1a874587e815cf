"""Generated gRPC code (``make proto``); do not edit by hand."""

from . import cluster_pb2, cluster_pb2_grpc, razpravljalnica_pb2, razpravljalnica_pb2_grpc

__all__ = ["cluster_pb2", "cluster_pb2_grpc", "razpravljalnica_pb2", "razpravljalnica_pb2_grpc"]
