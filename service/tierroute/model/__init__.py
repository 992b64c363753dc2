"""The models a server routes with and their lifecycle: the router classifier and the
Cascade's value model (both ONNX, served by onnxruntime; scikit-learn never loads here),
the bundle format (`bundle`: file names, metadata, thresholds), the versioned registry,
hot reload and rollback, and the vocabulary drift coverage is measured by.

The door is lazy (`tierroute.lazy_door`): reading a registry (`tierroute rollback`,
`models`) does not load onnxruntime.
"""

from typing import TYPE_CHECKING

from tierroute import lazy_door

if TYPE_CHECKING:
    from tierroute.model.adapt import AdaptLoop, AdaptResult
    from tierroute.model.bundle import Bundle
    from tierroute.model.classifier import RouterModel
    from tierroute.model.onnx_session import ORT_LOAD_ERRORS, create_session
    from tierroute.model.registry import (
        ModelRegistry,
        bundle_version,
        registry_summary,
        valid_version_name,
    )
    from tierroute.model.reload import (
        LoadedModel,
        Loader,
        ModelReloader,
        ModelSwap,
        load_model,
        startup_model,
    )
    from tierroute.model.value import ValueModel, split_outputs
    from tierroute.model.vocabulary import Vocabulary

__all__ = [
    "ORT_LOAD_ERRORS",
    "AdaptLoop",
    "AdaptResult",
    "Bundle",
    "LoadedModel",
    "Loader",
    "ModelRegistry",
    "ModelReloader",
    "ModelSwap",
    "RouterModel",
    "ValueModel",
    "Vocabulary",
    "bundle_version",
    "create_session",
    "load_model",
    "registry_summary",
    "split_outputs",
    "startup_model",
    "valid_version_name",
]

__getattr__ = lazy_door(
    __name__,
    {
        "adapt": ["AdaptLoop", "AdaptResult"],
        "bundle": ["Bundle"],
        "classifier": ["RouterModel"],
        "onnx_session": ["ORT_LOAD_ERRORS", "create_session"],
        "registry": ["ModelRegistry", "bundle_version", "registry_summary", "valid_version_name"],
        "reload": [
            "LoadedModel",
            "Loader",
            "ModelReloader",
            "ModelSwap",
            "load_model",
            "startup_model",
        ],
        "value": ["ValueModel", "split_outputs"],
        "vocabulary": ["Vocabulary"],
    },
)
