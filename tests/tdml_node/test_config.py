"""Configuration: file plus flags, strict types, unknown keys refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tdml_node.config import ConfigError, NodeConfig, load_config, write_config


def test_defaults_file_and_flags(tmp_path: Path) -> None:
    assert load_config(tmp_path).rpc_host == "127.0.0.1"
    write_config(NodeConfig(home=tmp_path, rpc_port=9000, bootstrap=("a:1", "b:2"), dev=True))
    cfg = load_config(tmp_path)
    assert (cfg.rpc_port, cfg.bootstrap, cfg.dev) == (9000, ("a:1", "b:2"), True)
    cfg = load_config(tmp_path, {"rpc_port": 9100, "bootstrap": (), "dev": None})
    assert (cfg.rpc_port, cfg.bootstrap, cfg.dev) == (9100, ("a:1", "b:2"), True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('nonsense = 1\n', "unknown setting"),
        ('rpc_port = "x"\n', "integer"),
        ('dev = 1\n', "true or false"),
        ('rpc_port = = 3\n', "cannot read"),
        ('bootstrap = [1]\n', "list of strings"),
        ('log_level = "verbose"\n', "log_level must be one of debug, info, warning, error, not 'verbose'"),
        ('log_format = "xml"\n', "log_format must be one of logfmt, json"),
        ('model_state = "some"\n', "model_state must be one of all, assigned, not 'some'"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path)


def test_the_written_config_explains_every_setting_and_reads_back(tmp_path: Path) -> None:
    import dataclasses
    import tomllib

    from tdml_node.config import COMMENTS

    config = NodeConfig(home=tmp_path, rpc_port=9000, bootstrap=('a:1', "b:2"), external_address='h"x:1')
    write_config(config)
    text = (tmp_path / "config.toml").read_text()
    lines = text.splitlines()
    names = [f.name for f in dataclasses.fields(NodeConfig) if f.name != "home"]
    assert set(COMMENTS) <= set(names)
    for name in COMMENTS:
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{name} = "))
        assert lines[at - 1].startswith("# "), name
    assert "bootstrap" in text and "height 0" in text and "-devnet" in text
    assert set(tomllib.loads(text)) == set(names)
    assert load_config(tmp_path) == config


def test_a_bad_log_level_flag_is_refused_like_a_bad_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="log_level"):
        load_config(tmp_path, {"log_level": "loud"})
