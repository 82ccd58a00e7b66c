"""A built-in dataset's sha256 names its content: the same data gives the same sha256, other data another."""

from __future__ import annotations

from tensorfleet_agent.workloads.datasets import check_dataset, data_sha256, load


def test_the_sha256_follows_the_data_not_its_types() -> None:
    x, y, _, _ = load("iris", {})
    digest = data_sha256(x, y)
    assert len(digest) == 64 and digest == data_sha256(x.copy(), y.astype(float))
    assert data_sha256(x[:-1], y[:-1]) != digest
    assert data_sha256(x.reshape(-1), y) != digest  # the same numbers in another shape are other data


def test_synthetic_datasets_differ_by_their_parameters() -> None:
    def digest(seed: int) -> str:
        params = check_dataset("t", ("classification",), "make_classification", {"n_samples": 50, "random_state": seed})
        x, y, _, _ = load("make_classification", params)
        return data_sha256(x, y)

    assert digest(1) == digest(1) != digest(2)
