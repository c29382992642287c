#!/usr/bin/env python3
"""Regenerates crates/weir-xds/descriptors/envoy.binpb.

The file is a protobuf FileDescriptorSet of the Envoy v3 API and everything it imports (xds,
udpa, validate, cel, google), taken from gRPC's `xds-protos` package on PyPI, whose generated
modules embed the descriptors of envoyproxy/data-plane-api. Weir uses it to render Envoy messages
as Envoy-style JSON (`weir config-dump`, golden tests): the Rust types come from `envoy-types`,
which ships no descriptors.

    python3 scripts/gen-envoy-descriptors.py

It creates a virtualenv under target/descriptor-venv, installs the pinned packages, imports every
generated module and writes the descriptors in dependency order.
"""

import os
import subprocess
import sys
import venv

XDS_PROTOS = "xds-protos==1.85.0"
PROTOBUF = "protobuf==6.33.1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates", "weir-xds", "descriptors", "envoy.binpb")
VENV = os.path.join(ROOT, "target", "descriptor-venv")

EXTRACT = r'''
import importlib, os, sys, pkgutil
from google.protobuf import descriptor_pb2
import envoy, xds, udpa, validate
mods = []
for pkg in (envoy, xds, udpa, validate):
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if info.name.endswith("_pb2"):
            mods.append(importlib.import_module(info.name))
files = {}
def add(fd):
    if fd.name in files:
        return
    for dep in fd.dependencies:
        add(dep)
    proto = descriptor_pb2.FileDescriptorProto()
    fd.CopyToProto(proto)
    files[fd.name] = proto
for m in sorted(mods, key=lambda m: m.__name__):
    add(m.DESCRIPTOR)
out = descriptor_pb2.FileDescriptorSet()
out.file.extend(files.values())
with open(sys.argv[1], "wb") as f:
    f.write(out.SerializeToString(deterministic=True))
print(f"{len(files)} files -> {sys.argv[1]}")
'''


def main():
    python = os.path.join(VENV, "bin", "python")
    if not os.path.exists(python):
        venv.create(VENV, with_pip=True)
    subprocess.check_call([python, "-m", "pip", "install", "-q", XDS_PROTOS, PROTOBUF])
    subprocess.check_call([python, "-c", EXTRACT, OUT])


if __name__ == "__main__":
    sys.exit(main())
