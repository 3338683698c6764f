"""MLflow tracking: one run per command with its tags, params, metrics, series and files, the lineage of
its inputs, the workflow's parent run, the store, and the saved views the UI opens on. Imports no torch.

Imports `lowloss.results` (figures of a path) and everything below it.
"""

from lowloss._lazy import lazy_exports

__all__ = ["end_workflow_run", "log_command", "start_workflow_run", "ui_links"]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {"log_command": "runs", "start_workflow_run": "lineage", "end_workflow_run": "lineage", "ui_links": "store"},
)
