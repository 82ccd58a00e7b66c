"""The suite's own rules (tests/helpers/suite_policy.py), run on small throwaway suites with pytester: under CI a
skip fails unless allowed, and a test not marked slow may not leave a server running."""

from __future__ import annotations

import pytest

from helpers import suite_policy

pytest_plugins = ["pytester"]

SKIPS = """
import shutil, pytest

@pytest.fixture(scope="module")
def lan():
    pytest.skip("simulated LAN unavailable: network namespaces need root")

def test_in_a_lan(lan):
    pass

@pytest.mark.skipif(True, reason="systemd-analyze is not installed")
def test_the_units_parse():
    pass

def test_needs_root():
    pytest.skip("mounting a small tmpfs as the controller's data dir needs root")

def test_external_mongodb():
    pytest.skip("pausing needs the SecantusDB process this suite starts itself")

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_known_bug():
    assert False

def test_runs():
    pass
"""


@pytest.fixture(autouse=True)
def _bare_pytest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # the inner runs need no plugin but the policy


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_inprocess(
        "-p", "helpers.suite_policy", "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestAssertRewriteWarning",
        "-rfEs", *args,
    )  # fmt: skip


def test_the_suite_registers_the_policy(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.get_plugin("tensorfleet-suite-policy") is suite_policy


def test_outside_ci_a_skip_is_a_skip(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile(test_skips=SKIPS)
    _run(pytester).assert_outcomes(passed=1, skipped=4, xfailed=1)


@pytest.mark.parametrize("ci", ["true", "1", "True"])
def test_in_ci_a_skip_fails_with_its_reason_unless_allowed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    monkeypatch.setenv("CI", ci)
    pytester.makepyfile(test_skips=SKIPS)
    result = _run(pytester)
    # a skip in setup (a fixture's, a skipif mark's) is a setup error, one in the test a failure; the allowed one
    # and the xfail stay as they are
    result.assert_outcomes(passed=1, failed=1, errors=2, skipped=1, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*skipped under CI: simulated LAN unavailable: network namespaces need root*",
            "*skipped under CI: systemd-analyze is not installed*",
            "*skipped under CI: mounting a small tmpfs as the controller's data dir needs root*",
            "SKIPPED*pausing needs the SecantusDB process this suite starts itself*",
        ]
    )


def test_ci_false_is_not_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "false")
    pytester.makepyfile(test_skips=SKIPS)
    _run(pytester).assert_outcomes(passed=1, skipped=4, xfailed=1)


def test_in_ci_a_module_level_importorskip_is_a_collection_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        test_extra="""
import pytest
pytest.importorskip("surely_not_installed_tf27", reason="the onnx extra is not installed")

def test_export():
    pass
"""
    )
    monkeypatch.delenv("CI", raising=False)
    _run(pytester).assert_outcomes(skipped=1)
    monkeypatch.setenv("CI", "true")
    result = _run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*skipped under CI: the onnx extra is not installed*"])


def test_every_allowed_skip_says_why() -> None:
    assert len(suite_policy.CI_ALLOWED_SKIPS) <= 3  # an allow-list, not a way around the rule
    for reason, why in suite_policy.CI_ALLOWED_SKIPS.items():
        assert reason.strip() and len(why.split()) >= 8, (reason, why)


SERVER = """
import subprocess, pytest

@pytest.fixture(scope="module")
def server():
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()

{mark}
def test_uses_a_server(server):
    pass

{mark}
def test_again(server):
    pass

def test_runs_a_short_helper():
    subprocess.run(["true"], check=True)

def test_kills_its_helper_without_waiting():
    subprocess.Popen(["sleep", "61"]).kill()
"""


def test_a_test_not_marked_slow_may_not_leave_a_server_running(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(suite_policy, "EXIT_GRACE", 0.3)
    pytester.makepyfile(test_server=SERVER.format(mark=""))
    result = _run(pytester)
    # only the test whose setup started it: the next one finds it already running
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_uses_a_server*", "*not marked slow left processes running*", "*pid *: sleep 60"]
    )


def test_a_slow_test_may(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmarkers =\n    slow: scenario tests\n")
    pytester.makepyfile(test_server=SERVER.format(mark="@pytest.mark.slow"))
    _run(pytester, "--strict-markers").assert_outcomes(passed=4)
