"""The TensorFleet SDK: `Client` (blocking) and `AsyncClient` (asyncio), over ControllerService.

    from tensorfleet_desktop.client import Client
    with Client() as tf:
        job = tf.submit({"algorithm": "random_forest", "dataset": "iris"})
        tf.wait(job["id"])
        run = tf.submit_project("path/to/project", ["python", "-m", "pkg.train"], num_workers=2)
        data = tf.upload_dataset_version("path/to/images", "pets")   # version N+1, or "unchanged"
        tf.submit({"algorithm": "image_classifier", "dataset": f"pets:{data['version']}"})

Jobs, agents and events come back as plain dicts (the same keys as the CLI's --json). The API is written once,
in AsyncClient; Client runs it on a private event loop. Importing it loads no controller, store or Qt module
(tests/unit/test_client_imports.py).
"""

from tensorfleet_desktop.client.aio import (
    TERMINAL,
    AsyncClient,
    check_command,
    check_env,
    project_job_spec,
    upload_summary,
)
from tensorfleet_desktop.client.connect import (
    DEFAULT_CONTROLLER,
    channel_security,
    controller_address,
    known_controllers_file,
    submitter,
)
from tensorfleet_desktop.client.errors import (
    ControllerFull,
    ControllerUnreachable,
    DataLoss,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    TensorFleetError,
)
from tensorfleet_desktop.client.models import load_model_file, trial_rows
from tensorfleet_desktop.client.sync import Client

__all__ = [
    "DEFAULT_CONTROLLER",
    "TERMINAL",
    "AsyncClient",
    "Client",
    "ControllerFull",
    "ControllerUnreachable",
    "DataLoss",
    "InvalidRequest",
    "NotFound",
    "PermissionDenied",
    "TensorFleetError",
    "channel_security",
    "check_command",
    "check_env",
    "controller_address",
    "known_controllers_file",
    "load_model_file",
    "project_job_spec",
    "submitter",
    "trial_rows",
    "upload_summary",
]
