"""One onnxruntime session helper for every model the server loads."""

from __future__ import annotations

from typing import Any

import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

# onnxruntime raises its own exception classes, none of them derived from a common base
# other than Exception; these are the ones session creation can raise for a bad file.
ORT_LOAD_ERRORS: tuple[type[Exception], ...] = (
    ort_state.Fail,
    ort_state.InvalidArgument,
    ort_state.InvalidGraph,
    ort_state.InvalidProtobuf,
    ort_state.NoSuchFile,
    ort_state.NotImplemented,
    ort_state.RuntimeException,
)


def create_session(model: bytes) -> Any:
    """An onnxruntime session tuned for one query at a time beside the gRPC threads.

    One intra-op and one inter-op thread with spinning off: more threads measured no faster
    on this model and a spinning pool steals the core the gRPC event loop needs.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
