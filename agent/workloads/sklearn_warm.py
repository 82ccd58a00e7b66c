"""Imported by the fork server (and a spare worker) before it forks a scikit-learn task, for what scikit-learn
computes once per process on its first input check: narwhals' search of every installed package's entry points
for dataframe plugins (it reads their metadata files: ~3 ms on a quiet box, ~13 ms on a loaded one). Done here
once, every forked worker inherits it, where each paid it again (a sweep's bundle: once per bundle)."""

from __future__ import annotations

import numpy as np
from sklearn.utils import check_array

check_array(np.zeros((1, 1)))
