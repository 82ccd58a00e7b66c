"""Job spec `group` and `tags` (the experiments table groups and filters by them), `submit --group/--tag`, and
the default name of a job on an uploaded dataset (its name, not user:<sha256>)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tensorfleet_desktop.cli import build_parser
from tensorfleet_desktop.cli.jobs import spec_from_args
from tensorfleet_desktop.controller.dataset_catalog import DatasetCatalog
from tensorfleet_desktop.controller.datasets import inspect
from tensorfleet_desktop.controller.jobspec import JobSpecError, parse_job_spec

RF = {"algorithm": "random_forest", "dataset": "iris"}


def test_group_and_tags_are_kept_trimmed_and_without_repeats() -> None:
    spec = parse_job_spec({**RF, "group": "  lr-study ", "tags": ["baseline", " small", "baseline"]})
    assert spec.group == "lr-study" and spec.tags == ("baseline", "small")
    stored = spec.to_dict()
    assert stored["group"] == "lr-study" and stored["tags"] == ["baseline", "small"]
    assert parse_job_spec(stored).to_dict() == stored  # a resubmit parses the stored spec again


def test_a_job_without_labels_stores_the_spec_it_stored_before() -> None:
    stored = parse_job_spec(RF).to_dict()
    assert "group" not in stored and "tags" not in stored
    assert parse_job_spec({**RF, "group": "", "tags": []}).to_dict() == stored


def test_one_string_is_one_tag() -> None:
    assert parse_job_spec({**RF, "tags": "baseline"}).tags == ("baseline",)


@pytest.mark.parametrize(
    ("labels", "field", "words"),
    [
        ({"group": 3}, "group", "must be a string"),
        ({"group": "g" * 101}, "group", "at most 100"),
        ({"group": "a\nb"}, "group", "control characters"),
        ({"tags": {"a": 1}}, "tags", "list of strings"),
        ({"tags": ["ok", 5]}, "tags[1]", "must be a string"),
        ({"tags": ["ok", "  "]}, "tags[1]", "is empty"),
        ({"tags": ["t" * 51]}, "tags[0]", "at most 50"),
        ({"tags": ["a\tb"]}, "tags[0]", "control characters"),
        ({"tags": [f"t{i}" for i in range(21)]}, "tags", "at most 20"),
    ],
)
def test_bad_labels_are_refused_naming_the_field(labels: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(JobSpecError) as caught:
        parse_job_spec({**RF, **labels})
    assert caught.value.field == field and words in caught.value.message


def test_limits_are_inclusive() -> None:
    spec = parse_job_spec({**RF, "group": "g" * 100, "tags": [f"{i:02d}" + "t" * 48 for i in range(20)]})
    assert len(spec.group) == 100 and len(spec.tags) == 20


def submitted(*argv: str) -> dict[str, Any]:
    return spec_from_args(build_parser().parse_args(["submit", *argv]))


def test_submit_flags_become_the_spec_keys(tmp_path: Path) -> None:
    spec = submitted("-a", "random_forest", "-d", "iris", "--group", "G", "--tag", "T", "--tag", "U")
    assert spec["group"] == "G" and spec["tags"] == ["T", "U"]
    parsed = parse_job_spec(spec)
    assert (parsed.group, parsed.tags) == ("G", ("T", "U"))
    job_file = tmp_path / "job.yaml"
    job_file.write_text("algorithm: random_forest\ndataset: iris\ngroup: from-file\ntags: first\n")
    spec = submitted(str(job_file), "--tag", "second")
    assert spec["group"] == "from-file" and spec["tags"] == ["first", "second"]
    assert "tags" not in submitted("-a", "noop") and "group" not in submitted("-a", "noop")


def test_default_name_is_algorithm_and_dataset() -> None:
    assert parse_job_spec(RF).name == "random_forest-iris"
    assert parse_job_spec({"algorithm": "noop"}).name == "noop"


def catalog_with_upload(tmp_path: Path) -> DatasetCatalog:
    """The controller's catalog holding one upload, profiled the way an upload is (datasets.inspect)."""
    csv = tmp_path / "churn.csv"
    csv.write_text("age,spend,label\n" + "".join(f"{20 + i},{i * 1.5},{'yes' if i % 2 else 'no'}\n" for i in range(20)))
    _fmt, rows, columns, profile = inspect(csv, "churn.csv")
    catalog = DatasetCatalog(store=None, blobs=None)  # type: ignore[arg-type]  # resolve() needs neither
    sha = "ab" * 32
    table = {"sha256": sha, "filename": "churn.csv", "format": "csv", "rows": rows, "columns": columns,
             "size": 1, "profile": profile, "source": {}}  # fmt: skip
    catalog.versions["churn"] = [
        {"name": "churn", "version": 1, "source": "upload", "url": "", "content_id": "cd" * 32, "files": 1,
         "bytes": 1, "created_at": 0.0, "created_by": "", "table": table, "table_error": ""}
    ]  # fmt: skip
    return catalog


def test_a_job_on_an_uploaded_dataset_is_named_after_the_dataset(tmp_path: Path) -> None:
    catalog = catalog_with_upload(tmp_path)
    spec = parse_job_spec(catalog.resolve({"algorithm": "random_forest", "dataset": "churn", "target": "label"}))
    assert spec.dataset == "user:" + "ab" * 32  # the job still runs on the content it names
    assert spec.name == "random_forest-churn"
    by_prefix = catalog.resolve({"algorithm": "logistic_regression", "dataset": "abababab", "target": "label"})
    assert parse_job_spec(by_prefix).name == "logistic_regression-churn"
    named = catalog.resolve({"algorithm": "random_forest", "dataset": "churn", "target": "label", "name": "mine"})
    assert parse_job_spec(named).name == "mine"
