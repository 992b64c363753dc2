"""Generated protobuf and gRPC code for tierroute.v1 (never edit; run `make protos`)."""
