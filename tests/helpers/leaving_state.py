"""Workload entry points for tests/integration/test_warm_worker_reuse.py: one leaves in its worker's process all
that a built-in workload could (environment variables, scikit-learn's config, the global random states, warning
filters), the next says what it finds. Run in a real worker, named as "helpers.leaving_state:leave" / ":look"."""

from __future__ import annotations

import os
import random
import warnings
from typing import Any

import numpy
import sklearn

from tensorfleet_agent import task

SEED = 1234


def leave(params: dict[str, Any]) -> None:
    del params
    os.environ["LEFT_BY_THE_LAST_TASK"] = "1"
    os.environ["OMP_NUM_THREADS"] = "99"
    sklearn.set_config(assume_finite=True)
    numpy.random.seed(SEED)
    random.seed(SEED)
    warnings.simplefilter("error")


def look(params: dict[str, Any]) -> None:
    del params
    warnings.warn("only a warning", UserWarning, stacklevel=1)  # raises if the last task's "error" filter held
    found = {
        "left": os.environ.get("LEFT_BY_THE_LAST_TASK"),
        "omp": os.environ.get("OMP_NUM_THREADS"),
        "dataset_dir": os.environ.get("TENSORFLEET_DATASET_DIR"),
        "job": os.environ.get("TENSORFLEET_JOB_ID"),
        "spec_job": task.spec()["job_id"],
        "assume_finite": sklearn.get_config()["assume_finite"],
        "numpy_draw_is_the_seeded_one": numpy.random.random() == numpy.random.RandomState(SEED).random_sample(),
        "random_draw_is_the_seeded_one": random.random() == random.Random(SEED).random(),
        "cwd": os.getcwd(),
    }
    print(repr(found))
