#!/usr/bin/env python3
"""Regenerates crates/weir-xds/descriptors/envoy.binpb.

The file is a protobuf FileDescriptorSet of the Envoy v3 API and everything it imports (xds,
udpa, validate, cel, google). Weir uses it to read Envoy JSON and YAML (`weir proxy
--bootstrap`) and to render Envoy messages as Envoy-style JSON (`weir config-dump`, golden
tests); the Rust types come from `envoy-types`.

Two sources, merged file by file:
- `envoy-types` itself, whose crate carries the descriptors its Rust types were generated from
  (src/generated/types.bin, found with `cargo metadata`). These win: every message and field the
  Rust types know can then be read from YAML, and the field-coverage test (weir-proxy's
  tests/fields.rs) probes exactly the fields the proxy decodes.
- gRPC's `xds-protos` package on PyPI, whose generated modules embed the descriptors of
  envoyproxy/data-plane-api, for the files envoy-types leaves out (udpa and xds TypedStruct, the
  xds matchers, the v2 API).

    python3 scripts/gen-envoy-descriptors.py

It creates a virtualenv under target/descriptor-venv, installs the pinned packages, merges the
two sets without source comments, and writes the files in dependency order.
"""

import json
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
# Every file, by name: envoy-types' first, then xds-protos' for the names it lacks.
merged = {}
preferred = descriptor_pb2.FileDescriptorSet()
with open(sys.argv[2], "rb") as f:
    preferred.ParseFromString(f.read())
for proto in preferred.file:
    proto.ClearField("source_code_info")
    merged[proto.name] = proto
taken = len(merged)
def collect(fd):
    if fd.name in merged:
        return
    proto = descriptor_pb2.FileDescriptorProto()
    fd.CopyToProto(proto)
    merged[fd.name] = proto
    for dep in fd.dependencies:
        collect(dep)
for m in sorted(mods, key=lambda m: m.__name__):
    collect(m.DESCRIPTOR)
# Dependency order: a file after everything it imports.
ordered = {}
def place(name):
    if name in ordered:
        return
    proto = merged[name]
    for dep in proto.dependency:
        if dep not in merged:
            sys.exit(f"{name} imports {dep}, which neither source has")
        place(dep)
    ordered[name] = proto
for name in sorted(merged):
    place(name)
out = descriptor_pb2.FileDescriptorSet()
out.file.extend(ordered.values())
with open(sys.argv[1], "wb") as f:
    f.write(out.SerializeToString(deterministic=True))
print(f"{len(ordered)} files ({taken} from envoy-types) -> {sys.argv[1]}")
'''


def envoy_types_descriptors():
    """The descriptor set inside the envoy-types crate this workspace builds with."""
    metadata = json.loads(
        subprocess.check_output(
            ["cargo", "metadata", "--format-version", "1", "--locked"], cwd=ROOT
        )
    )
    for package in metadata["packages"]:
        if package["name"] == "envoy-types":
            crate = os.path.dirname(package["manifest_path"])
            path = os.path.join(crate, "src", "generated", "types.bin")
            if not os.path.exists(path):
                sys.exit(f"envoy-types {package['version']} carries no {path}")
            return path
    sys.exit("envoy-types is not a dependency of this workspace")


def main():
    types = envoy_types_descriptors()
    python = os.path.join(VENV, "bin", "python")
    if not os.path.exists(python):
        venv.create(VENV, with_pip=True)
    subprocess.check_call([python, "-m", "pip", "install", "-q", XDS_PROTOS, PROTOBUF])
    subprocess.check_call([python, "-c", EXTRACT, OUT, types])


if __name__ == "__main__":
    sys.exit(main())
