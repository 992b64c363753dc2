"""Writes the descriptors of Envoy's ExternalProcessor service and everything it imports.

Run with the pinned `xds-protos` package (grpc's build of envoyproxy/data-plane-api) on
PYTHONPATH, by `make protos`: xds-protos cannot be installed beside our serving
dependencies, since it carries its own, older copies of the OpenTelemetry and Google API
protos. protoc then generates our stubs from this set (`--descriptor_set_in`), like ours.

    python protos/envoy/descriptor_set.py OUT.pb MODULE...

writes a FileDescriptorSet of the modules' proto files and their imports to OUT.pb and
prints the proto files to generate (all but protobuf's well-known types, which protobuf
ships).
"""

from __future__ import annotations

import importlib
import sys

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor


def closure(roots: list[FileDescriptor]) -> list[FileDescriptor]:
    """The files and everything they import, each after its imports."""
    ordered: list[FileDescriptor] = []
    seen: set[str] = set()

    def visit(fd: FileDescriptor) -> None:
        if fd.name in seen:
            return
        seen.add(fd.name)
        for dep in fd.dependencies:
            visit(dep)
        ordered.append(fd)

    for root in roots:
        visit(root)
    return ordered


def main(out: str, modules: list[str]) -> None:
    roots = [importlib.import_module(name).DESCRIPTOR for name in modules]
    files = descriptor_pb2.FileDescriptorSet()
    for fd in closure(roots):
        fd.CopyToProto(files.file.add())
    with open(out, "wb") as sink:
        sink.write(files.SerializeToString(deterministic=True))
    for proto in files.file:
        if not proto.name.startswith("google/protobuf/"):
            print(proto.name)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
