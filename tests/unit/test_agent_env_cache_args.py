"""`--env-cache-gb` and $TENSORFLEET_ENV_CACHE_GB: the flag wins, the variable is the packaged agent's way (agent.env),
20 GB otherwise; a bad value is refused naming where it came from."""

from __future__ import annotations

import pytest

from tensorfleet_agent import __main__ as agent_main


def test_the_flag_wins_over_the_variable_which_wins_over_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(agent_main.ENV_CACHE_VAR, raising=False)
    assert agent_main._env_cache_gb(None) == 20.0
    monkeypatch.setenv(agent_main.ENV_CACHE_VAR, "7.5")
    assert agent_main._env_cache_gb(None) == 7.5
    assert agent_main._env_cache_gb(3.0) == 3.0
    assert agent_main.build_parser().parse_args(["--env-cache-gb", "0"]).env_cache_gb == 0.0


@pytest.mark.parametrize(
    ("flag", "variable", "problem"),
    [
        (-1.0, "", "--env-cache-gb must be >= 0 GB"),
        (float("nan"), "", "--env-cache-gb must be >= 0 GB"),
        (None, "lots", "$TENSORFLEET_ENV_CACHE_GB must be a number of GB, got 'lots'"),
        (None, "-2", "$TENSORFLEET_ENV_CACHE_GB must be >= 0 GB"),
    ],
)
def test_a_bad_size_is_refused_naming_where_it_came_from(
    monkeypatch: pytest.MonkeyPatch, flag: float | None, variable: str, problem: str
) -> None:
    monkeypatch.setenv(agent_main.ENV_CACHE_VAR, variable)
    with pytest.raises(ValueError, match=problem.replace("$", r"\$")):
        agent_main._env_cache_gb(flag)
