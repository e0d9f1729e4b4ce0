"""Settings: validated at start-up, one readable line per problem, secrets never echoed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from warren.config import load_settings, redact_url, retry_delays_ms
from warren.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("WARREN_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env file


def test_defaults_are_safe_for_production() -> None:
    s = load_settings()
    assert (s.prefetch, s.queue_type, s.delivery_limit) == (1, "quorum", 5)
    assert s.retry_delays_ms() == (1000, 2000, 4000, 8000)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("WARREN_PREFETCH", "0", "invalid setting WARREN_PREFETCH: Input should be greater than or equal to 1"),
        ("WARREN_HEARTBEAT", "soon", "invalid setting WARREN_HEARTBEAT: Input should be a valid integer"),
        ("WARREN_QUEUE_TYPE", "stream", "invalid setting WARREN_QUEUE_TYPE: Input should be 'quorum' or 'classic'"),
        ("WARREN_NAMESPACE", "has space", "invalid setting WARREN_NAMESPACE: must be 1-63 letters"),
        ("WARREN_RETRY_MAX_DELAY_MS", "10", "must not be below WARREN_RETRY_INITIAL_DELAY_MS"),
    ],
)
def test_an_invalid_value_is_named_in_one_line(monkeypatch, variable, value, expected) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_secret_url_is_never_echoed_in_an_error(monkeypatch) -> None:
    monkeypatch.setenv("WARREN_BROKER_URL", "")
    monkeypatch.setenv("WARREN_BROKER_PASSWORD", "hunter2")
    monkeypatch.setenv("WARREN_PREFETCH", "-1")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "hunter2" not in str(caught.value)


def test_credentials_come_from_mounted_secret_files(monkeypatch, tmp_path) -> None:
    (tmp_path / "password").write_text("s3cr:t/\n")
    monkeypatch.setenv("WARREN_BROKER_URL", "amqp://app@rabbit.svc:5672/prod")
    monkeypatch.setenv("WARREN_BROKER_PASSWORD_FILE", str(tmp_path / "password"))
    url = load_settings().resolved_broker_url()
    assert url == "amqp://app:s3cr%3At%2F@rabbit.svc:5672/prod"
    assert redact_url(url) == "amqp://app:***@rabbit.svc:5672/prod"


def test_redaction_masks_any_password_and_keeps_the_host() -> None:
    assert redact_url("amqp://u:pa/ss@host:5672/vh") == "amqp://u:***@host:5672/vh"
    assert redact_url("amqp://u:p@ss@[::1]:5672/%2F") == "amqp://u:***@[::1]:5672/%2F"
    assert redact_url("amqp://host:5672/%2F") == "amqp://host:5672/%2F"
    assert redact_url("amqp://user@host/") == "amqp://user@host/"
    assert redact_url("user:s3cret@rabbit:5672") == "user:***@rabbit:5672"  # a URL missing its scheme


def test_a_whole_url_file_wins_over_the_variable(monkeypatch, tmp_path) -> None:
    (tmp_path / "url").write_text("amqp://a:b@elsewhere:5672/%2F")
    monkeypatch.setenv("WARREN_BROKER_URL_FILE", str(tmp_path / "url"))
    assert load_settings().resolved_broker_url() == "amqp://a:b@elsewhere:5672/%2F"


def test_an_unreadable_secret_file_is_a_clear_start_up_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("WARREN_BROKER_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="WARREN_BROKER_PASSWORD_FILE: cannot read"):
        load_settings()


def test_retry_delays_grow_exponentially_up_to_the_cap() -> None:
    assert retry_delays_ms(attempts=6, initial_ms=500, multiplier=3, cap_ms=10_000) == (500, 1500, 4500, 10_000, 10_000)
    assert retry_delays_ms(attempts=1, initial_ms=500, multiplier=3, cap_ms=10_000) == ()


def test_the_cli_exits_2_with_one_line_on_bad_config(tmp_path) -> None:
    env = {"PATH": "/usr/bin:/bin", "WARREN_PREFETCH": "lots", "WARREN_BROKER_URL": "amqp://u:topsecret@h/"}
    done = subprocess.run(
        [sys.executable, "-m", "warren", "topology", "show"], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "warren: invalid setting WARREN_PREFETCH: Input should be a valid integer, "
        "unable to parse string as an integer (got 'lots')"
    ]
    assert "topsecret" not in done.stderr + done.stdout


@pytest.mark.parametrize(
    ("command", "env", "expected"),
    [
        # a workload's own setting stops its worker at start-up, before any task fails on it
        (["warren", "worker", "payments"], {"WARREN_SHOP_FAILURE_RATE": '{"payments": 2}'},
         "warren: invalid setting WARREN_SHOP_FAILURE_RATE: rates must be between 0 and 1"),
        (["warren_shop", "api"], {"WARREN_API_PORT": "80000"},
         "warren-shop: invalid setting WARREN_API_PORT: Input should be less than or equal to 65535"),
        (["warren", "worker", "nosuchpool"], {},
         "warren: unknown pool 'nosuchpool': use an installed pool ("),
    ],
)
def test_each_layer_checks_its_own_settings_at_start_up(tmp_path, command, env, expected) -> None:
    done = subprocess.run(
        [sys.executable, "-m", *command], env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith(expected), done.stderr


def test_several_broker_urls_each_get_the_mounted_credentials(monkeypatch, tmp_path) -> None:
    (tmp_path / "password").write_text("s3cret\n")
    monkeypatch.setenv("WARREN_BROKER_URL", "amqp://app@r1:5672/%2F, amqp://app@r2:5672/%2F,amqp://app@r3/%2F")
    monkeypatch.setenv("WARREN_BROKER_PASSWORD_FILE", str(tmp_path / "password"))
    assert load_settings().resolved_broker_urls() == [
        "amqp://app:s3cret@r1:5672/%2F", "amqp://app:s3cret@r2:5672/%2F", "amqp://app:s3cret@r3/%2F"]


def test_each_new_connection_starts_at_the_next_node_and_tries_them_all() -> None:
    from warren.broker.session import connection_parameters
    from warren.config import Settings

    settings = Settings(_env_file=None, broker_url="amqp://r1/%2F,amqp://r2/%2F,amqp://r3/%2F")
    orders = [[p.host for p in connection_parameters(settings, name="t")] for _ in range(3)]
    assert all(sorted(order) == ["r1", "r2", "r3"] for order in orders)  # every node, each time
    assert len({order[0] for order in orders}) == 3  # a different first node each time
    assert orders[1] == orders[0][1:] + orders[0][:1]  # the one after the node used last
