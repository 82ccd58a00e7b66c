"""Every error that quotes a store or blob URI shows it without its password, however malformed the URI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tensorfleet_desktop.controller.settings import FileSettings, check_backends
from tensorfleet_desktop.controller.store import open_store
from tensorfleet_desktop.controller.store.base import redact_uri
from tensorfleet_desktop.controller.store.blobs import open_blobs

PASSWORD = "pw-Zq81x"


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (f"mongodb://tf:{PASSWORD}@db.lan:27017/tf", "mongodb://tf:***@db.lan:27017/tf"),
        (f"mongodb://tf:{PASSWORD}@h1:1,h2:2/tf?replicaSet=rs", "mongodb://tf:***@h1:1,h2:2/tf?replicaSet=rs"),
        (f"mongodb://tf:a@{PASSWORD}@db.lan/tf", "mongodb://tf:***@db.lan/tf"),  # an unescaped @ in the password
        (f"mongodb://tf:a:{PASSWORD}@db.lan/tf", "mongodb://tf:***@db.lan/tf"),
        (f"mongodb://tf:{PASSWORD}@/tf", "mongodb://tf:***@/tf"),
        (
            f"cannot reach mongodb://tf:{PASSWORD}@db.lan/tf: refused",
            "cannot reach mongodb://tf:***@db.lan/tf: refused",
        ),
        ("mongodb://db.lan:27017/tf", "mongodb://db.lan:27017/tf"),
        ("sqlite:///home/me/tensorfleet.db", "sqlite:///home/me/tensorfleet.db"),
    ],
)
def test_redact_uri_hides_the_password(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


@pytest.mark.parametrize(
    "uri",
    [
        f"mongodb://tf:{PASSWORD}@/tf",  # no host
        f"mongodb://tf:{PASSWORD}@127.0.0.1:notaport/tf",
        f"mongodb://tf:{PASSWORD}@127.0.0.1:1/tf?serverSelectionTimeoutMS=200",  # nothing listens
        f"mongodb://tf:a@{PASSWORD}@127.0.0.1:1/tf",  # not escaped
    ],
)
async def test_a_bad_mongodb_uri_is_a_clear_error_without_its_password(uri: str) -> None:
    pytest.importorskip("pymongo")
    with pytest.raises(ValueError) as refused:
        store = open_store(uri)
        await store.open()
    message = str(refused.value)
    assert "mongodb://tf:***@" in message and PASSWORD not in message, message


def test_settings_check_of_a_bad_mongodb_uri_hides_the_password(tmp_path: Path) -> None:
    pytest.importorskip("pymongo")
    with pytest.raises(ValueError) as refused:
        check_backends(FileSettings(store_uri=f"mongodb://tf:{PASSWORD}@/tf"), tmp_path)
    assert "mongodb://tf:***@/tf" in str(refused.value) and PASSWORD not in str(refused.value)


def test_a_bad_s3_uri_is_quoted_without_its_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("minio")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    with pytest.raises(ValueError) as refused:
        open_blobs(f"s3://key:{PASSWORD}@?endpoint=127.0.0.1:9000", tmp_path)
    assert PASSWORD not in str(refused.value) and "***" in str(refused.value)
