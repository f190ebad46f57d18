"""Node configuration: a TOML file in the node's home, overridden by command-line flags.

A home directory holds ``config.toml``, ``genesis.bin`` (the canonical
genesis bytes), ``node_key.json`` and ``data/`` (LevelDB). Every setting has a
default that suits a single machine; ``tdml-node init`` writes them out so an
operator can see and edit them.

This module must never open sockets or databases; it only reads and writes
configuration.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consensus.tendermint import TimeoutConfig
from tdml_node.logfmt import FORMATS, LEVELS

MODEL_ALL = "all"
MODEL_ASSIGNED = "assigned"
MODEL_STATES = (MODEL_ALL, MODEL_ASSIGNED)
"""The ``model_state`` settings (``tdml_node.node.model_holding`` says what each means)."""

CONFIG_FILE = "config.toml"
GENESIS_FILE = "genesis.bin"
KEY_FILE = "node_key.json"
DATA_DIR = "data"
RPC_COOKIE_FILE = "rpc.cookie"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


class ConfigError(Exception):
    """The configuration file or a flag holds a value the node cannot use."""


@dataclass(frozen=True)
class NodeConfig:
    home: Path
    rpc_host: str = "127.0.0.1"
    rpc_port: int = 8645
    rpc_vhosts: tuple[str, ...] = LOOPBACK_NAMES
    """Host names requests may be addressed to (any port); "*" allows any (geth's --http.vhosts)."""
    rpc_cors_origins: tuple[str, ...] = LOOPBACK_NAMES
    """Host names of the web origins allowed to call (any scheme, port); "*" allows any (--http.corsdomain)."""
    rpc_token: str = ""
    """A fixed bearer token for blob uploads from remote clients, accepted besides the rpc.cookie's."""
    p2p_host: str = "127.0.0.1"
    p2p_port: int = 26656
    external_address: str = ""
    bootstrap: tuple[str, ...] = ()
    dev: bool = False
    """A throwaway development network: unencrypted keys and test-only options are allowed."""
    block_interval_ms: int = 1000
    """How long a proposer with nothing to include waits before proposing an empty block."""
    partial_wait_ms: int = 2000
    """How long a proposer waits for other trainers' units before including the ones it has."""
    timeout_propose_ms: int = 3000
    timeout_propose_delta_ms: int = 500
    timeout_prevote_ms: int = 1000
    timeout_prevote_delta_ms: int = 500
    timeout_precommit_ms: int = 1000
    timeout_precommit_delta_ms: int = 500
    timely_precision_ms: int = 500
    """How far validators' clocks may differ (PBTS's PRECISION): a fresh proposal whose block time is
    more than this ahead of our clock on arrival is untimely and prevoted nil. Loose enough for NTP-kept
    clocks (CometBFT uses 505 ms); tightening it only costs rounds, never safety."""
    timely_message_delay_ms: int = 15000
    """How long a proposal may travel (PBTS's MSGDELAY): one older than this plus the precision on arrival
    is untimely. CometBFT's 15 s: a busy validator (replaying units, on a loaded machine) may take its
    proposal off the wire seconds late, and a delay set below that costs honest rounds (decision 26)."""
    train_threads: int = 0
    """Threads this node trains with on jobs that tolerate other profiles (0: the job's own)."""
    model_state: str = "all"
    """``all``: recompute every step's model work and hold every stage; ``assigned``: a trainer that does not
    validate takes it from the certified blocks and holds only the partitions it is dealt."""
    retain_steps: int = 8
    """Work blobs (results, checkpoints) and model states of older steps are pruned."""
    max_peers: int = 32
    log_level: str = "info"
    """One of ``debug``, ``info``, ``warning``, ``error``; per-block and per-vote lines are ``debug``."""
    log_format: str = "logfmt"
    """``logfmt`` (``key=value``, for people and grep) or ``json`` (one object a line, for log shippers)."""
    byzantine: tuple[str, ...] = field(default=())
    """Test-network misbehaviours (see ``tdml-node run --help``); refused unless ``dev``."""

    @property
    def data_dir(self) -> Path:
        return self.home / DATA_DIR

    @property
    def rpc_cookie_file(self) -> Path:
        """Written at every start, mode 0600: the bearer token that may upload blobs."""
        return cookie_file(self.home)

    @property
    def key_file(self) -> Path:
        return self.home / KEY_FILE

    @property
    def genesis_file(self) -> Path:
        return self.home / GENESIS_FILE

    @property
    def timeouts(self) -> TimeoutConfig:
        return TimeoutConfig(
            propose_ms=self.timeout_propose_ms,
            propose_delta_ms=self.timeout_propose_delta_ms,
            prevote_ms=self.timeout_prevote_ms,
            prevote_delta_ms=self.timeout_prevote_delta_ms,
            precommit_ms=self.timeout_precommit_ms,
            precommit_delta_ms=self.timeout_precommit_delta_ms,
        )


def cookie_file(home: Path) -> Path:
    return home / DATA_DIR / RPC_COOKIE_FILE


_FIELDS = {f.name: f for f in dataclasses.fields(NodeConfig) if f.name != "home"}
_CHOICES: dict[str, tuple[str, ...]] = {"log_level": LEVELS, "log_format": FORMATS, "model_state": MODEL_STATES}


def load_config(home: Path, overrides: dict[str, Any] | None = None) -> NodeConfig:
    """Read ``home/config.toml`` (if present) and apply non-None ``overrides``."""
    values: dict[str, Any] = {}
    path = home / CONFIG_FILE
    if path.exists():
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        for key, value in raw.items():
            if key not in _FIELDS:
                raise ConfigError(f"{path}: unknown setting {key!r}")
            values[key] = value
    for key, value in (overrides or {}).items():
        if value is not None and value != ():
            values[key] = value
    for key, value in list(values.items()):
        values[key] = _coerce(key, value)
    return NodeConfig(home=home, **values)


def _coerce(key: str, value: Any) -> Any:
    default = _FIELDS[key].default
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false")
        return value
    if isinstance(default, int):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{key} must be a non-negative integer")
        return value
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key} must be a list of strings")
        return tuple(value)
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string")
    choices = _CHOICES.get(key)
    if choices is not None and value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, not {value!r}")
    return value


COMMENTS: dict[str, str] = {
    "rpc_host": "Address the JSON-RPC server binds; keep 127.0.0.1 unless a proxy guards it.",
    "rpc_port": "JSON-RPC port (`tdml-node rpc`, `job`, `register` talk to it); /health and /metrics too.",
    "rpc_vhosts": 'Host names requests may be addressed to, any port ("*": any); loopback names by default.',
    "rpc_cors_origins": 'Host names of web pages that may call the RPC ("*": any); loopback names by default.',
    "rpc_token": "A fixed bearer token for blob uploads from other machines, besides data/rpc.cookie's.",
    "p2p_host": "Address the peer-to-peer listener binds (0.0.0.0 to accept peers from other machines).",
    "p2p_port": "Peer-to-peer port.",
    "external_address": 'The "host:port" peers should dial, when not the listener\'s (behind NAT).',
    "bootstrap": 'Peers to join through, ["HOST:PORT", ...]; also `run --bootstrap`. Without any, a node\n'
    "that is not a validator of its genesis waits at height 0 alone.",
    "dev": "Throwaway dev network: unencrypted keys and test-only options. Taken only on a dev chain\n"
    "(chain id ending in -dev or -devnet); `run` refuses it on any other.",
    "block_interval_ms": "A proposer with nothing to include proposes an empty block after this long.",
    "partial_wait_ms": "A proposer waits this long for other trainers' units before including the ones it has.",
    "timeout_propose_ms": "Tendermint timeouts: propose, prevote and precommit, and their growth per round.",
    "timely_precision_ms": "Proposer-based timestamps: how far clocks may differ, and how long a proposal\n"
    "may travel; a fresh proposal whose block time falls outside is prevoted nil (decision 26).",
    "train_threads": "Threads for jobs that tolerate other execution profiles (0: the job's own).",
    "model_state": "all: recompute every step's aggregation and hold every stage of every job (a full node).\n"
    "assigned: a trainer that is no validator takes step outcomes from the blocks its validators certify\n"
    "and fetches only the model partitions it is dealt; a validator always recomputes.",
    "retain_steps": "Work blobs and model states older than this many steps of their job are deleted.",
    "max_peers": "Peer connections kept.",
    "log_level": "debug, info, warning or error; logs go to stderr.",
    "log_format": "logfmt (key=value lines) or json (one object per line).",
    "byzantine": "TEST NETWORKS ONLY: misbehaviours for the adversarial suite (see `tdml-node run --help`).",
}
"""The comment written above each setting; settings without one follow the previous one's."""


def write_config(config: NodeConfig) -> None:
    """Write ``config.toml`` as commented text; ``load_config`` reads it back with tomllib."""
    lines = [
        "# tdml-node configuration, written by `tdml-node init`.",
        "# Flags given to `tdml-node run` override these; docs/operations.md explains each one.",
    ]
    for name in _FIELDS:
        value = getattr(config, name)
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int):
            text = str(value)
        elif isinstance(value, tuple):
            text = "[" + ", ".join(json.dumps(v) for v in value) + "]"
        else:
            text = json.dumps(value)  # a JSON string is a TOML basic string, escapes and all
        if name in COMMENTS:
            lines.append("")
            lines.extend(f"# {line}" for line in COMMENTS[name].split("\n"))
        lines.append(f"{name} = {text}")
    config.home.mkdir(parents=True, exist_ok=True)
    (config.home / CONFIG_FILE).write_text("\n".join(lines) + "\n")
