"""Your own job end to end on a real one-node dev chain: the five-line Python client and ``job submit --spec``.

The node runs as its own process on loopback (``tdml_node.devnet``). The
job is the digits task from a user's own ``.npz`` of raw pixels with
standardisation fitted on the train split; the exported model must score on
raw test pixels exactly the accuracy the chain reported, and the chain's
model must equal the reference run bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tdml_node.cli import main
from tdml_node.devnet import Devnet, running_devnet
from tdml_node.sdk import Client, Progress
from tdml_node.work.datasets import digits_split
from tdml_node.work.reference import run_reference
from tdml_node.work.specfile import parse_spec_file
from tdml_node.work.userdata import prepare_job

pytestmark = pytest.mark.slow

SPEC = """
name = "my-digits"
steps = 30
global_batch = 256
shards = 4
eval_every = 10

[model]
name = "mlp"
args = { in_dim = 64, hidden = 64, layers = 2, classes = 10 }

[optimizer]
name = "sgd"
lr = "0.05"
momentum = "0.9"

[data]
standardize = true
"""


def test_the_five_line_client_trains_your_own_data_and_exports_a_model_for_raw_input(tmp_path: Path) -> None:
    spec_path = tmp_path / "job.toml"
    spec_path.write_text(SPEC)
    x_train, y_train, x_test, y_test = digits_split()
    data = tmp_path / "data.npz"
    np.savez(data, x=x_train, y=y_train, x_test=x_test, y_test=y_test)
    devnet = Devnet.create(tmp_path / "net", 1)
    seen: list[Progress] = []
    with running_devnet(devnet):
        c = Client(devnet.nodes[0].rpc_url, key=devnet.base / "client_key.json", home=devnet.nodes[0].home)
        job = c.submit(spec_path, data=data)
        final = job.wait(progress=seen.append, timeout=300)
        model = job.export(tmp_path / "model.safetensors")
        view = job.view()

        # The same job from the command line, on a CSV with a named label column.
        csv = tmp_path / "data.csv"
        header = ",".join([f"p{i}" for i in range(64)] + ["digit"])
        rows = [",".join([*map(str, row), str(label)]) for row, label in zip(x_train[:512], y_train[:512], strict=True)]
        csv.write_text("\n".join([header, *rows]) + "\n")
        csv_spec = tmp_path / "csv.toml"
        csv_spec.write_text(SPEC.replace("steps = 30", "steps = 3").replace("[data]", '[data]\nlabel = "digit"'))
        cli = CliRunner().invoke(main, ["job", "submit", "--spec", str(csv_spec), "--data", str(csv),
                                        "--key", str(devnet.base / "client_key.json"), "--url", devnet.nodes[0].rpc_url,
                                            "--home", str(devnet.nodes[0].home)])
        assert cli.exit_code == 0, cli.output
        csv_final = c.job(cli.output.strip()).wait(timeout=120)

    assert final.status == "done" and final.step == final.steps == 30 and final.test_accuracy is not None
    assert seen[-1] == final and [p.step for p in seen] == sorted(p.step for p in seen)
    assert csv_final.status == "done" and csv_final.steps == 3

    with torch.no_grad():
        predicted = model(torch.from_numpy(x_test)).argmax(dim=-1).numpy()
    correct = int((predicted == y_test).sum())
    assert correct / len(y_test) == final.test_accuracy
    assert final.test_accuracy > 0.8

    spec, bundle = prepare_job(parse_spec_file(spec_path), data)
    assert view is not None and view["modelRoot"] == "0x" + run_reference(spec, bundle).final_root.hex()
