"""Configuration loading and validation (supervisor/config.py).

Every invalid input must give exactly one line that names the file and the
dotted key, and nothing else: no traceback, no partial config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
import pytest

from supervisor import config
from supervisor.config import Config
from supervisor.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "phalanx.toml"
RUNTIME_VARS = ("PHALANX_RUNTIME_DIR", "RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR")


def write(tmp_path: Path, text: str | bytes, name: str = "phalanx.toml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def load_error(path: str | os.PathLike[str]) -> str:
    with pytest.raises(ConfigError) as info:
        config.load(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}: "), message
    return message


def parse_error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        config.parse(data, "where.toml")
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith("where.toml: "), message
    return message.removeprefix("where.toml: ")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in RUNTIME_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


# ----------------------------------------------------------------- defaults


def test_empty_file_is_a_working_configuration(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, ""))
    assert cfg.workers.count == 0
    assert cfg.tasks.allow == ["workers.builtin"]
    assert cfg.endpoints.intake == "tcp://127.0.0.1:7455"
    assert cfg.source == str(tmp_path / "phalanx.toml")


def test_no_path_gives_built_in_defaults() -> None:
    cfg = config.load(None)
    assert msgspec.structs.replace(cfg, source="") == Config()


def test_defaults_are_safe_loopback_only() -> None:
    cfg = Config()
    assert "127.0.0.1" in cfg.endpoints.intake
    assert "127.0.0.1" in cfg.endpoints.publisher


def test_worker_count_zero_means_one_per_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert Config().worker_count == 6


def test_worker_count_falls_back_to_one_when_cpu_count_is_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert Config().worker_count == 1


def test_explicit_worker_count_is_used_as_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert config.parse({"workers": {"count": 3}}).worker_count == 3


def test_example_config_loads_and_equals_the_defaults() -> None:
    """config/phalanx.toml documents the defaults; it must not drift from them."""
    cfg = config.load(EXAMPLE)
    assert cfg.source == str(EXAMPLE)
    assert msgspec.structs.replace(cfg, source="") == Config()


def test_values_from_file_override_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, '[workers]\ncount = 4\n[tasks]\nallow = ["a.b", "c"]\ntimeout = 2.5\n')
    cfg = config.load(path)
    assert cfg.workers.count == 4
    assert cfg.tasks.allow == ["a.b", "c"]
    assert cfg.tasks.timeout == 2.5
    assert cfg.restart == Config().restart


def test_config_is_immutable() -> None:
    cfg = Config()
    with pytest.raises(AttributeError):
        cfg.workers.count = 3  # type: ignore[misc]


# ---------------------------------------------------------- invalid values


def test_wrong_type_names_the_dotted_key() -> None:
    assert parse_error({"workers": {"count": "four"}}) == (
        "workers.count: Expected `int`, got `str`"
    )


def test_wrong_type_for_a_whole_section_names_the_section() -> None:
    assert parse_error({"workers": 3}).startswith("workers: ")


def test_negative_count_names_the_key_and_the_bound() -> None:
    message = parse_error({"workers": {"count": -1}})
    assert message.startswith("workers.count: ")
    assert ">= 0" in message


def test_value_out_of_range_names_the_key() -> None:
    assert parse_error({"restart": {"backoff_jitter": 2}}).startswith("restart.backoff_jitter: ")
    assert parse_error({"restart": {"period": 0}}).startswith("restart.period: ")


def test_unknown_top_level_key_is_an_error_naming_it() -> None:
    assert parse_error({"wrokers": {}}) == "wrokers: unknown key"


def test_unknown_nested_key_is_an_error_naming_its_dotted_path() -> None:
    assert parse_error({"workers": {"cuont": 2}}) == "workers.cuont: unknown key"


def test_unknown_key_with_odd_characters_stays_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[workers]\n"a\\nb - at `x" = 1\n')
    message = load_error(path)
    assert message.endswith("unknown key")
    assert "workers." in message


def test_source_is_not_a_user_settable_key() -> None:
    assert parse_error({"source": "x"}).startswith("source: ")


def test_bad_module_name_in_allow_names_its_index() -> None:
    message = parse_error({"tasks": {"allow": ["workers.builtin", "not-a-module"]}})
    assert message.startswith("tasks.allow[1]: ")


@pytest.mark.parametrize("name", ["", "1abc", "a..b", "a.", "os; rm", "a/b"])
def test_module_names_that_cannot_be_imported_are_rejected(name: str) -> None:
    assert parse_error({"tasks": {"allow": [name]}}).startswith("tasks.allow[0]: ")


def test_bad_module_name_in_preload_names_its_index() -> None:
    assert parse_error({"workers": {"preload": ["ok", "x y"]}}).startswith(
        "workers.preload[1]: "
    )


@pytest.mark.parametrize("key", ["intake", "publisher", "control"])
@pytest.mark.parametrize("value", ["http://127.0.0.1:80", "tcp://127.0.0.1", "127.0.0.1:5", "ipc://"])
def test_bad_endpoint_names_the_key(key: str, value: str) -> None:
    message = parse_error({"endpoints": {key: value}})
    assert message.startswith(f"endpoints.{key}: ")
    assert repr(value) in message


@pytest.mark.parametrize(
    "value", ["tcp://127.0.0.1:1", "tcp://127.0.0.2:5555", "tcp://[::1]:5", "tcp://localhost:5",
              "ipc:///run/x.sock"]
)
def test_good_endpoints_are_accepted(value: str) -> None:
    assert config.parse({"endpoints": {"intake": value}}).endpoints.intake == value


CURVE = {"secret_key_file": "/etc/phalanx/server.key_secret",
         "authorized_keys_dir": "/etc/phalanx/clients"}


@pytest.mark.parametrize("key", ["intake", "publisher"])
@pytest.mark.parametrize("value", ["tcp://*:5555", "tcp://0.0.0.0:5555", "tcp://10.1.2.3:5555",
                                   "tcp://eth0:5555", "tcp://example.org:5555"])
def test_an_endpoint_beyond_loopback_needs_curve(key: str, value: str) -> None:
    """Refused with one line naming the key and the fix; accepted with [curve]."""
    message = parse_error({"endpoints": {key: value}})
    assert message.startswith(f"endpoints.{key}: {value!r} is reachable from other hosts")
    assert "[curve]" in message
    cfg = config.parse({"endpoints": {key: value}, "curve": CURVE})
    assert getattr(cfg.endpoints, key) == value


def test_the_control_endpoint_never_leaves_the_host_even_with_curve() -> None:
    message = parse_error({"endpoints": {"control": "tcp://0.0.0.0:5"}, "curve": CURVE})
    assert message.startswith("endpoints.control: ")


def test_the_pickle_lane_is_only_allowed_on_a_private_ipc_intake() -> None:
    """workers.pickled unpickles what it is sent: never on a TCP intake,
    not even loopback (any local user could reach it)."""
    allow = {"allow": ["workers.builtin", "workers.pickled"]}
    message = parse_error({"tasks": allow})  # default intake: tcp://127.0.0.1
    assert message.startswith("tasks.allow: workers.pickled runs pickled calls")
    cfg = config.parse({"tasks": allow, "endpoints": {"intake": "ipc:///run/px/in"}})
    assert "workers.pickled" in cfg.tasks.allow


def test_curve_needs_both_keys() -> None:
    message = parse_error({"curve": {"secret_key_file": "/x.key_secret"}})
    assert message.startswith("curve: set both")


def test_inproc_endpoint_is_refused() -> None:
    """inproc:// would bind an endpoint no client process could ever reach."""
    assert parse_error({"endpoints": {"intake": "inproc://x"}}).startswith("endpoints.intake: ")


def test_backoff_max_below_backoff_initial_is_an_error() -> None:
    message = parse_error({"restart": {"backoff_initial": 5.0, "backoff_max": 1.0}})
    assert message.startswith("restart.backoff_max: ")
    assert "backoff_initial" in message


def test_backoff_max_equal_to_backoff_initial_is_fine() -> None:
    cfg = config.parse({"restart": {"backoff_initial": 2.0, "backoff_max": 2.0}})
    assert cfg.restart.backoff_max == 2.0


# ------------------------------------------------------------- bad files


def test_invalid_toml_is_one_line_naming_the_file(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, "[workers\ncount = 1\n"))
    assert "invalid TOML" in message


def test_toml_error_is_reported_with_the_file_even_deep_in_a_file(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, "[workers]\ncount = 1\ncount = 2\n"))
    assert "invalid TOML" in message


def test_non_utf8_file_is_rejected(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, b"[workers]\ncount = 1 # \xff\xfe\n"))
    assert "not UTF-8" in message


def test_missing_file_is_rejected(tmp_path: Path) -> None:
    message = load_error(tmp_path / "nope.toml")
    assert "no such file" in message


def test_directory_given_as_path_is_unreadable(tmp_path: Path) -> None:
    message = load_error(tmp_path)
    assert "cannot read" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_file_without_read_permission_is_unreadable(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    path.chmod(0)
    try:
        assert "cannot read" in load_error(path)
    finally:
        path.chmod(0o600)


def test_value_error_in_file_names_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[workers]\ncount = -2\n")
    assert load_error(path).startswith(f"{path}: workers.count: ")


# ----------------------------------------------------------- runtime dir


def test_configured_runtime_dir_wins_over_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PHALANX_RUNTIME_DIR", "/env/phalanx")
    assert config.resolve_runtime_dir("/configured") == Path("/configured")


def test_runtime_dir_prefers_phalanx_runtime_dir(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PHALANX_RUNTIME_DIR", "/a")
    clean_env.setenv("RUNTIME_DIRECTORY", "/b")
    clean_env.setenv("XDG_RUNTIME_DIR", "/c")
    assert config.resolve_runtime_dir("") == Path("/a")


def test_runtime_dir_then_systemd_runtime_directory_first_entry(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("RUNTIME_DIRECTORY", "/run/phalanx:/run/other")
    clean_env.setenv("XDG_RUNTIME_DIR", "/c")
    assert config.resolve_runtime_dir("") == Path("/run/phalanx")


def test_runtime_dir_then_xdg_runtime_dir_subdirectory(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert config.resolve_runtime_dir("") == Path("/run/user/1000/phalanx")


def test_runtime_dir_last_resort_is_per_user_tmp(clean_env: pytest.MonkeyPatch) -> None:
    assert config.resolve_runtime_dir("") == Path(f"/tmp/phalanx-{os.getuid()}")


def test_empty_environment_values_are_skipped(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PHALANX_RUNTIME_DIR", "")
    clean_env.setenv("RUNTIME_DIRECTORY", "")
    clean_env.setenv("XDG_RUNTIME_DIR", "/x")
    assert config.resolve_runtime_dir("") == Path("/x/phalanx")


def test_control_endpoint_defaults_to_socket_in_runtime_dir(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("PHALANX_RUNTIME_DIR", "/rt")
    cfg = Config()
    assert cfg.runtime_dir == Path("/rt")
    assert cfg.control_endpoint == "ipc:///rt/control.sock"


def test_explicit_control_endpoint_is_kept(clean_env: pytest.MonkeyPatch) -> None:
    cfg = config.parse({"endpoints": {"control": "ipc:///elsewhere/c.sock"}})
    assert cfg.control_endpoint == "ipc:///elsewhere/c.sock"


# ---------------------------------------------------------------- to_dict


def test_to_dict_shows_effective_values_and_hides_source(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("PHALANX_RUNTIME_DIR", "/rt")
    clean_env.setattr(os, "cpu_count", lambda: 5)
    cfg = config.parse({"tasks": {"timeout": 1.5}}, "x.toml")
    out = config.to_dict(cfg)
    assert "source" not in out
    assert set(out) == set(Config.__struct_fields__) - {"source"}
    assert {"daemon", "workers", "endpoints", "tasks", "restart", "shutdown"} <= set(out)
    assert out["workers"]["count"] == 5
    assert out["daemon"]["runtime_dir"] == "/rt"
    assert out["endpoints"]["control"] == "ipc:///rt/control.sock"
    assert out["tasks"]["timeout"] == 1.5
    assert out["restart"] == msgspec.to_builtins(Config().restart)


def test_to_dict_is_plain_data_that_survives_messagepack(clean_env: pytest.MonkeyPatch) -> None:
    out = config.to_dict(Config())
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(out)) == out


def test_to_dict_does_not_change_the_config() -> None:
    cfg = Config()
    config.to_dict(cfg)
    assert cfg == Config()


# ------------------------------------------------ task limits and task path
def test_max_attempts_over_its_limit_is_a_config_error() -> None:
    message = parse_error({"tasks": {"max_attempts": 11}})
    assert message == "tasks.max_attempts: 11 is over tasks.max_attempts_limit (10)"
    assert config.parse({"tasks": {"max_attempts": 11, "max_attempts_limit": 20}})


def test_task_path_defaults_to_the_config_files_folder(tmp_path: Path) -> None:
    """Task modules next to the config file are found without any setup."""
    assert config.load(write(tmp_path, "")).task_path == [str(tmp_path.resolve())]
    assert config.load(None).task_path == []


def test_task_path_entries_are_relative_to_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[tasks]\npath = ["lib", "/abs/dir"]\n')
    assert config.load(path).task_path == [str(tmp_path.resolve() / "lib"), "/abs/dir"]
    assert config.load(write(tmp_path, "[tasks]\npath = []\n")).task_path == []


def test_default_allowlist_holds_no_hostile_tasks_and_the_demo_config_adds_them() -> None:
    assert Config().tasks.allow == ["workers.builtin"]
    demo = config.load(EXAMPLE.with_name("demo.toml"))
    assert demo.tasks.allow == ["workers.builtin", "workers.testing"]


def test_observe_is_off_by_default() -> None:
    cfg = config.load(None)
    assert (cfg.observe.http, cfg.observe.xmlrpc, cfg.observe.token) == ("", "", "")


@pytest.mark.parametrize("value", ["localhost", "127.0.0.1:", ":9466", "http://127.0.0.1:9466",
                                   "127.0.0.1:9466/x", "a b:1"])
def test_observe_http_must_be_host_port(value: str) -> None:
    assert parse_error({"observe": {"http": value}}).startswith("observe.http: ")


def test_observe_token_must_fit_a_header_and_a_cookie() -> None:
    assert parse_error({"observe": {"token": "a b;c"}}).startswith("observe.token: ")
    assert config.parse({"observe": {"token": "AbC.1-2_3~+/="}}).observe.token == "AbC.1-2_3~+/="


def test_observe_refuses_the_fork_start_method() -> None:
    message = parse_error({"observe": {"http": "127.0.0.1:0"}, "workers": {"start_method": "fork"}})
    assert message.startswith("observe: ") and "'fork'" in message
    assert config.parse({"observe": {"xmlrpc": "/tmp/x.sock"}}).observe.xmlrpc == "/tmp/x.sock"


def test_observe_changes_need_a_daemon_restart() -> None:
    from supervisor.daemon import reconfig

    old = config.parse({"observe": {"http": "127.0.0.1:9466"}})
    new = config.parse({"observe": {"http": "127.0.0.1:9467", "token": "t"}})
    assert {(c.key, c.how) for c in reconfig.diff(old, new)} == {
        ("observe.http", "daemon"), ("observe.token", "daemon")}
    assert reconfig.effective(old, new).observe == old.observe
