"""TF Serving's `BatchingParameters` and `MonitoringConfig`, compiled from
the `.proto` files vendored in `tests/protos/` (see its README).

`compile_serving_protos(out_dir)` runs `grpc_tools.protoc` once per process
(the generated modules register their files in protobuf's default
descriptor pool, which allows each file once) and returns the generated
modules. protoc runs in a child process: loaded next to TensorFlow's own
protobuf runtime it crashes. The imports TF Serving's files need
(`wrappers.proto`, TensorFlow's `config.proto`, `named_tensor.proto`) are
given to protoc as a descriptor set taken from the installed modules, so
the generated code links against exactly what is imported at runtime.
"""

import importlib.util
import os
import subprocess
import sys
import types

PROTO_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          "protos")
FILES = {
    "session_bundle_config":
        "tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
    "monitoring_config": "tensorflow_serving/config/monitoring_config.proto",
}
_COMPILED = {}


def _dependency_set():
    """A serialized `FileDescriptorSet` of the installed imports."""
    from google.protobuf import descriptor_pb2
    from google.protobuf import wrappers_pb2
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.core.protobuf import named_tensor_pb2

    files, seen = descriptor_pb2.FileDescriptorSet(), set()

    def add(file):
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            add(dependency)
        file.CopyToProto(files.file.add())

    for module in (wrappers_pb2, config_pb2, named_tensor_pb2):
        add(module.DESCRIPTOR)
    return files.SerializeToString()


def compile_serving_protos(out_dir):
    """Compiles the vendored files into `out_dir` and imports them.

    Returns:
        A namespace with `session_bundle_config` and `monitoring_config`
        (the generated `_pb2` modules).
    """
    if _COMPILED:
        return types.SimpleNamespace(**_COMPILED)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    deps = os.path.join(out_dir, "dependencies.pb")
    with open(deps, "wb") as f:
        f.write(_dependency_set())
    command = [sys.executable, "-m", "grpc_tools.protoc",
               f"--proto_path={PROTO_ROOT}", f"--descriptor_set_in={deps}",
               f"--python_out={out_dir}", *FILES.values()]
    proc = subprocess.run(command, capture_output=True, text=True,
                          timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"protoc failed ({proc.returncode}):\n"
                           f"{proc.stderr}")
    modules = {}
    for key, proto in FILES.items():
        path = os.path.join(out_dir, proto[:-len(".proto")] + "_pb2.py")
        spec = importlib.util.spec_from_file_location(
            f"kmtest_{key}_pb2", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules[key] = module
    _COMPILED.update(modules)
    return types.SimpleNamespace(**modules)
