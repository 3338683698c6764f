"""Files: atomic writes, weight files (safetensors whose header holds the metadata, checked without torch in
`header`), resumable checkpoints, what kind of lowloss file a path is, where a command may write
(`destinations`), trained model files as networks, model sets and the path table.

Imports `lowloss.nets`, `lowloss.errors` and the package version only.
"""

from lowloss._lazy import lazy_exports

__all__ = [
    "Artifact",
    "ArtifactError",
    "ModelSet",
    "load_endpoints",
    "load_model",
    "load_model_set",
    "load_weights",
    "read_meta",
    "save_weights",
    "write_atomic",
    "write_json_atomic",
    "write_model_set",
    "write_text_atomic",
]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ArtifactError": "atomic",
        "write_atomic": "atomic",
        "write_text_atomic": "atomic",
        "write_json_atomic": "atomic",
        "Artifact": "weights",
        "save_weights": "weights",
        "load_weights": "weights",
        "read_meta": "header",
        "load_model": "model_files",
        "load_endpoints": "model_files",
        "ModelSet": "model_set",
        "write_model_set": "model_set",
        "load_model_set": "model_set",
    },
)
