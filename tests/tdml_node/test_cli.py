"""The command line: init with an encrypted key, genesis, reference, rpc, help, and model export."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from consensus.codec import decode_as
from consensus.crypto import Keypair
from consensus.types import Genesis
from tdml_node.cli import main
from tdml_node.cli.job_view import job_table
from tdml_node.devnet import Devnet, running_devnet, submit_job
from tdml_node.keys import read_key_file, write_key_file
from tdml_node.work.export import load_exported
from tdml_node.work.jobs import get_job, preset_spec
from tdml_node.work.reference import run_reference
from tdml_node.work.specfile import parse_spec


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _ok(args: list[str]) -> str:
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_every_command_explains_itself() -> None:
    for args in ([], ["init"], ["run"], ["devnet"], ["rpc"], ["job"], ["job", "submit"], ["reference"],
                 ["model", "export"], ["genesis", "new"], ["register"], ["transfer"], ["keys"], ["keys", "new"]):
        out = _ok([*args, "--help"])
        assert "Usage:" in out and len(out) > 200
    assert "TEST NETWORKS ONLY" in _ok(["run", "--help"])


def test_job_presets_prints_each_presets_whole_spec_as_a_spec_file() -> None:
    out = _ok(["job", "presets"])
    for name in ("digits-mlp", "digits-mlp-xprofile", "digits-mlp-local", "digits-cnn", "synthetic-mlp"):
        block = out.split(f"# ===== {name} =====\n", 1)[1].split("# =====", 1)[0]
        assert parse_spec(block).spec == preset_spec(name)
    one = _ok(["job", "presets", "digits-mlp"])
    assert "=====" not in one and parse_spec(one).spec == get_job("digits-mlp")[0]
    assert 'lr = "0.05"' in one and "global_batch = 256" in one
    chars = parse_spec(out.split("# ===== chars-transformer =====\n", 1)[1].split("# =====", 1)[0])
    assert chars.vocab_from_data and chars.spec.model.name == "char_transformer"
    assert _ok(["job", "presets", "--names"]).split() == [
        "digits-mlp", "digits-mlp-xprofile", "digits-mlp-local", "digits-mlp-pipeline", "digits-cnn", "synthetic-mlp",
        "chars-transformer", "chars-transformer-pipeline",
    ]
    unknown = CliRunner().invoke(main, ["job", "presets", "nope"])
    assert unknown.exit_code != 0 and "unknown preset 'nope'" in unknown.output


def test_job_submit_spec_prints_a_bad_spec_as_one_line(tmp_path: Path) -> None:
    spec = tmp_path / "job.toml"
    spec.write_text(_ok(["job", "presets", "digits-mlp"]).replace('name = "mlp"', 'name = "resnet"'))
    key = tmp_path / "key.json"
    write_key_file(key, Keypair.generate(), None, insecure=True)
    result = CliRunner().invoke(main, ["job", "submit", "--spec", str(spec), "--key", str(key), "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 1 and result.exception is not None and isinstance(result.exception, SystemExit)
    assert result.output.strip() == f"Error: {spec}: unknown model 'resnet'; the registry has char_transformer, cnn, mlp"
    data = tmp_path / "d.npz"
    data.write_bytes(b"")
    both = CliRunner().invoke(main, ["job", "submit", "--spec", str(tmp_path / "job.toml"), "--data", str(data),
                                     "--key", str(key), "--url", "http://127.0.0.1:9"])
    assert both.exit_code == 1 and "Error:" in both.output and "Traceback" not in both.output


def test_the_cli_lists_exactly_the_behaviours_there_are() -> None:
    from tdml_node.devtools.behaviours import BEHAVIOURS
    from tdml_node.devtools.catalogue import ALL_BEHAVIOURS

    assert sorted(ALL_BEHAVIOURS) == sorted(["honest", *(n for b in BEHAVIOURS for n in b.names)])


def test_init_genesis_and_a_clear_error_for_a_bad_passphrase(tmp_path: Path) -> None:
    home = tmp_path / "n"
    secret = tmp_path / "pass"
    secret.write_text("hunter2\n")
    _ok(["init", "--home", str(home), "--passphrase-file", str(secret), "--rpc-port", "9123"])
    assert "9123" in (home / "config.toml").read_text()
    assert read_key_file(home / "node_key.json", "hunter2").public_key
    again = CliRunner().invoke(main, ["init", "--home", str(home), "--insecure-dev-key"])
    assert again.exit_code != 0 and "exists" in again.output
    out = tmp_path / "genesis.bin"
    _ok(["genesis", "new", "--chain-id", "cli-test", "--node", str(home), "--out", str(out)])
    assert decode_as(out.read_bytes(), Genesis).chain_id == "cli-test"
    shown = json.loads(_ok(["genesis", "show", str(out)]))
    assert shown["hash"].startswith("0x") and shown["genesis"]["chain_id"] == "cli-test"
    wrong = tmp_path / "wrong"
    wrong.write_text("nope")
    (home / "genesis.bin").write_bytes(out.read_bytes())
    bad = CliRunner().invoke(main, ["run", "--home", str(home), "--passphrase-file", str(wrong)])
    assert bad.exit_code != 0 and "wrong passphrase" in bad.output
    unreachable = CliRunner().invoke(main, ["rpc", "--url", "http://127.0.0.1:9", "tdml_blockNumber"])
    assert unreachable.exit_code != 0 and "cannot reach" in unreachable.output


def test_reference_prints_the_reference_root() -> None:
    spec, dataset = get_job("digits-mlp", steps=5)
    out = _ok(["reference", "--steps", "5"]).strip()
    assert out == "0x" + run_reference(spec, dataset).final_root.hex()


@pytest.mark.slow
def test_model_export_from_a_running_node_loads_in_pytorch(tmp_path: Path) -> None:
    spec, dataset = get_job("digits-mlp", steps=20)
    devnet = Devnet.create(tmp_path / "net", 1)
    with running_devnet(devnet):
        client = devnet.nodes[0].client()
        job_id = submit_job(client, devnet.client_key, devnet.genesis.chain_id, spec, dataset)
        deadline = time.monotonic() + 120
        active: dict[str, Any] | None = None
        while (view := client.call("tdml_getJob", job_id) or {}).get("status") != "done":
            if active is None and view.get("status") == "active" and view.get("assignment"):
                active = view
            assert time.monotonic() < deadline
            time.sleep(0.1)
        out = tmp_path / "model.safetensors"
        url = devnet.nodes[0].rpc_url
        _ok(["model", "export", job_id, "--out", str(out), "--url", url])
        listed = json.loads(_ok(["job", "list", "--url", url]))
        table = _ok(["job", "show", job_id, "--url", url]).splitlines()
        record = json.loads(_ok(["job", "show", job_id, "--json", "--url", url]))
        refused = CliRunner().invoke(main, ["rpc", "tdml_noSuchMethod", "--url", url], catch_exceptions=False)
        missing = CliRunner().invoke(main, ["job", "show", "0x" + "00" * 32, "--url", url], catch_exceptions=False)
    assert refused.exit_code == 1 and refused.output.startswith("Error: the node refused: ")
    assert len(refused.output.splitlines()) == 1
    assert missing.exit_code == 1 and "no job 0x" in missing.output
    rows = dict(line.split(None, 1) for line in table if not line.startswith(("train loss", "model root")))
    assert rows["job"] == job_id and rows["status"] == "done" and rows["step"] == "20/20"
    assert len(table) < 12 and rows["trainers"] == "- (none at work)"
    assert active is not None, "the job never showed an assignment"
    at_work = dict(line.split(None, 1) for line in job_table(active) if line.startswith("trainers"))
    assert at_work["trainers"] == "0x" + devnet.nodes[0].keypair.address.hex()
    train_loss = record["lastOutcome"]["train_loss"]
    assert isinstance(train_loss, float) and 0 < train_loss < 10
    assert any(line.startswith("train loss") and f"{train_loss:.4f}" in line for line in table)
    assert 0 <= record["lastEval"]["eval_correct"] <= record["lastEval"]["eval_total"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~_umask()
    model, meta = load_exported(out)
    assert meta["model_root"] == run_reference(spec, dataset).final_root.hex()
    assert listed[0]["status"] == "done" and sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize(("flag", "value"), [("--log-level", "verbose"), ("--log-format", "xml")])
def test_run_refuses_an_unknown_log_level_or_format(tmp_path: Path, flag: str, value: str) -> None:
    result = CliRunner().invoke(main, ["run", "--home", str(tmp_path), flag, value])
    assert result.exit_code == 2
    assert f"Invalid value for '{flag}'" in result.output and value in result.output
