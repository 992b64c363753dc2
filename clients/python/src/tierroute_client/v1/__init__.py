"""Generated protobuf and gRPC code for tierroute.v1 (never edit; run `make protos`).

The same protoc output as the server's `tierroute.v1`, with its imports made relative, so the
client needs only grpcio and protobuf. Its descriptors are byte-identical to the server's: in
one process both modules share one registered file and the same message classes.
"""
