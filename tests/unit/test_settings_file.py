"""The controller's config file (controller/settings.py): [http] beside [store] and [blobs], typed keys with errors
that name them, a round trip through save_settings, and `serve` taking the HTTP port and host from it when no flag
names them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from tensorfleet_desktop.cli import build_parser
from tensorfleet_desktop.cli.exit_codes import UsageError
from tensorfleet_desktop.controller.settings import FileSettings, load_settings, save_settings


def written(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_the_http_section_is_read_typed(tmp_path: Path) -> None:
    path = written(tmp_path, '[store]\nuri = "sqlite:///x.db"\n\n[http]\nport = 8080\nhost = "0.0.0.0"\n')
    settings = load_settings(path)
    assert (settings.http_port, settings.http_host, settings.store_uri) == (8080, "0.0.0.0", "sqlite:///x.db")
    assert load_settings(written(tmp_path, "[http]\nport = 0\n")).http_port == 0  # 0: a free port
    absent = load_settings(written(tmp_path, '[store]\nuri = "sqlite:///x.db"\n'))
    assert (absent.http_port, absent.http_host) == (None, "")


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ('[http]\nport = "8080"\n', "[http] port must be an integer (no quotes), got '8080'"),
        ("[http]\nport = 80.5\n", "[http] port must be an integer"),
        ("[http]\nport = true\n", "[http] port must be an integer"),
        ("[http]\nport = 65536\n", "[http] port must be between 0 and 65535 (0: a free port), got 65536"),
        ("[http]\nport = -1\n", "[http] port must be between 0 and 65535"),
        ("[http]\nhost = 8080\n", "[http] host must be a string (in quotes), got 8080"),
        ("[store]\nuri = 5\n", "[store] uri must be a string"),
        ('[http]\nadress = "x"\n', "[http] has no key 'adress' (known: port, host)"),
        ("[web]\nport = 1\n", "unknown section [web] (known: store, blobs, http, datasets, scheduler)"),
        ("[scheduler]\nfair_share_half_life = 0\n", "[scheduler] fair_share_half_life must be a number of seconds > 0"),
        ('[scheduler]\nfair_share_half_life = "1h"\n', "fair_share_half_life must be a number of seconds > 0"),
        ('[datasets]\npeer_transfer = "no"\n', "[datasets] peer_transfer must be true or false (no quotes), got 'no'"),
    ],
)
def test_a_wrong_value_is_refused_naming_its_key(tmp_path: Path, body: str, said: str) -> None:
    path = written(tmp_path, body)
    with pytest.raises(ValueError) as raised:
        load_settings(path)
    assert said in str(raised.value) and str(path) in str(raised.value)


def test_peer_transfer_is_on_unless_the_file_turns_it_off_and_a_save_keeps_that(tmp_path: Path) -> None:
    assert load_settings(written(tmp_path, "[http]\nport = 1\n")).peer_transfer is True
    off = load_settings(written(tmp_path, "[datasets]\npeer_transfer = false\n"))
    assert off.peer_transfer is False
    path = tmp_path / "saved.toml"
    save_settings(path, off)
    assert "peer_transfer = false" in path.read_text() and load_settings(path) == off


def test_save_keeps_http_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "config.toml"
    every = FileSettings("mongodb://db.lan/tf", "s3://models?endpoint=m:9000", "AK", 'se"cr\\et', 0, "::")
    save_settings(path, every)
    assert load_settings(path) == every
    assert path.stat().st_mode & 0o777 == 0o600
    only_http = FileSettings(http_port=8080)
    save_settings(path, only_http)
    assert load_settings(path) == only_http
    assert path.read_text().strip() == "[http]\nport = 8080"


def serve_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *flags: str) -> Any:
    """The ControllerConfig `tensorfleet serve` builds from these flags and tmp_path/config.toml (the app itself
    is replaced: it refuses to start once it has been given its config)."""
    from tensorfleet_desktop.controller import app

    seen: list[Any] = []

    class Recorder:
        def __init__(self, config: Any, **claimed: Any) -> None:  # serve's data dir lock and local agent
            seen.append(config)

        def request_stop(self) -> None:
            pass

        async def start(self) -> None:
            raise ValueError("recorded")

    monkeypatch.setattr(app, "ControllerApp", Recorder)
    args: argparse.Namespace = build_parser().parse_args(
        ["serve", "--data-dir", str(tmp_path), "--no-mdns", "--no-local-agent", *flags]
    )
    assert args.run(args) != 0
    return seen[0]


def test_serve_takes_the_http_port_and_host_from_the_file_unless_flags_name_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = serve_config(monkeypatch, tmp_path)
    assert (config.http_port, config.http_host) == (None, "")  # no file: no HTTP
    written(tmp_path, '[http]\nport = 8181\nhost = "127.0.0.2"\n')
    config = serve_config(monkeypatch, tmp_path)
    assert (config.http_port, config.http_host) == (8181, "127.0.0.2")
    config = serve_config(monkeypatch, tmp_path, "--http-port", "0", "--http-host", "127.0.0.3")
    assert (config.http_port, config.http_host) == (0, "127.0.0.3")


def test_serve_says_which_key_is_wrong(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    written(tmp_path, '[http]\nport = "8080"\n')
    with pytest.raises(UsageError, match=r"\[http\] port must be an integer"):
        serve_config(monkeypatch, tmp_path)


def test_the_fair_share_half_life_is_an_hour_unless_the_file_says_and_a_save_keeps_it(tmp_path: Path) -> None:
    assert load_settings(written(tmp_path, "[http]\nport = 1\n")).fair_share_half_life == 3600.0
    short = load_settings(written(tmp_path, "[scheduler]\nfair_share_half_life = 600\n"))
    assert short.fair_share_half_life == 600.0
    path = tmp_path / "saved.toml"
    save_settings(path, short)
    assert "fair_share_half_life = 600.0" in path.read_text() and load_settings(path) == short


def test_fair_share_is_on_unless_the_file_turns_it_off_and_serve_passes_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert load_settings(written(tmp_path, "[http]\nport = 1\n")).fair_share is True
    off = load_settings(written(tmp_path, "[scheduler]\nfair_share = false\n"))
    assert off.fair_share is False
    path = tmp_path / "saved.toml"
    save_settings(path, off)
    assert "fair_share = false" in path.read_text() and load_settings(path) == off
    with pytest.raises(ValueError, match="fair_share"):
        load_settings(written(tmp_path, '[scheduler]\nfair_share = "no"\n'))
    written(tmp_path, "[scheduler]\nfair_share = false\n")
    assert serve_config(monkeypatch, tmp_path).fair_share is False  # serve hands it to the controller


def test_the_preempt_grace_is_30_s_unless_the_file_says_at_most_an_hour(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert load_settings(written(tmp_path, "[http]\nport = 1\n")).preempt_grace == 30.0
    short = load_settings(written(tmp_path, "[scheduler]\npreempt_grace = 5\n"))
    assert short.preempt_grace == 5.0
    with pytest.raises(ValueError, match=r"\[scheduler\] preempt_grace must be at most 3600 seconds"):
        load_settings(written(tmp_path, "[scheduler]\npreempt_grace = 7200\n"))
    with pytest.raises(ValueError, match=r"preempt_grace must be a number of seconds > 0"):
        load_settings(written(tmp_path, "[scheduler]\npreempt_grace = 0\n"))
    path = tmp_path / "saved.toml"
    save_settings(path, short)
    assert load_settings(path).preempt_grace == 5.0
    written(tmp_path, "[scheduler]\npreempt_grace = 12\n")
    assert serve_config(monkeypatch, tmp_path).preempt_grace == 12.0  # serve hands it to the controller
