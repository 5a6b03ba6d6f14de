"""docs/configuration.md lists every configuration key with the default the code has: the arguments of
FusedSegModule, SegDataModule, the default callbacks and the built-in encoders, and the trainer keys the
configs set. When a test here fails, its message holds the table row to add or correct."""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import inspect
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from fusionseg.data import SegDataModule
from fusionseg.encoders import EncoderSpec
from fusionseg.lightning_cli import DEFAULT_CALLBACKS, FusionSegCLI
from fusionseg.module import FusedSegModule

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")

REPO = Path(__file__).parents[1]
DOC = REPO / "docs" / "configuration.md"
# Set by the CLI from the data module (`link_arguments`), so they have no default of their own.
LINKED = {"model.task", "model.num_classes", "model.thing_ids", "model.class_names", "model.eval_rules"}
BUILTIN_ENCODERS = ("edges", "regions", "timm", "dinov3", "sam2")


def yaml_value(value: Any) -> str:
    """A default as `--print_config` writes it: `null`, `true`, `0.0001`, `[0.5, 2.0]`, `auto`."""
    if isinstance(value, tuple):
        value = list(value)
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


def cells(line: str) -> list[str]:
    """Cells of a Markdown table row (`\\|` inside a cell is not a separator), without backticks."""
    parts = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [p.strip().strip("`").replace("\\|", "|") for p in parts]


def doc_rows() -> dict[str, list[str]]:
    """`{key: cells}` of every table row; encoder arguments are keyed `<encoder>.<argument>`."""
    rows: dict[str, list[str]] = {}
    heading = ""
    for line in DOC.read_text().splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip().strip("`")
        elif line.startswith("| `"):
            row = cells(line)
            key = f"{heading}.{row[0]}" if heading in BUILTIN_ENCODERS else row[0]
            rows[key] = row
    return rows


@pytest.fixture(scope="module")
def printed_defaults() -> dict:
    """What `fusionseg fit --model.master regions --print_config` prints: every default of the CLI."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        FusionSegCLI(args=["fit", "--model.master", "regions", "--print_config"])
    return yaml.safe_load(out.getvalue())


def expected_row(key: str, default: str) -> str:
    return f"| `{key}` | `TYPE` | `{default}` | MEANING |"


@pytest.mark.parametrize("cls, section", [(FusedSegModule, "model"), (SegDataModule, "data")])
def test_every_public_argument_of_the_module_and_datamodule_is_documented(cls, section):
    rows = doc_rows()
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    missing = [f"{section}.{p}" for p in params if f"{section}.{p}" not in rows]
    assert not missing, f"docs/configuration.md lacks rows for {missing}"
    stale = [k for k in rows if k.startswith(f"{section}.") and k.split(".", 1)[1] not in params]
    assert not stale, f"docs/configuration.md documents arguments that {cls.__name__} no longer has: {stale}"


@pytest.mark.parametrize("section", ["model", "data", *DEFAULT_CALLBACKS])
def test_documented_defaults_are_the_printed_defaults(section, printed_defaults):
    rows = doc_rows()
    printed = printed_defaults.get(section) or {}  # a callback without arguments has no keys
    wrong = []
    for name, value in printed.items():
        key = f"{section}.{name}"
        if key == "model.master":  # required: the fixture had to name one
            assert rows[key][2] == "required"
            continue
        if key not in rows or rows[key][2] != yaml_value(value):
            wrong.append(expected_row(key, yaml_value(value)))
    assert not wrong, "rows to add or correct in docs/configuration.md:\n" + "\n".join(wrong)
    documented = {k for k in rows if k.startswith(f"{section}.")}
    assert documented - set(f"{section}.{n}" for n in printed) <= LINKED, "rows for keys the CLI does not have"
    for key in LINKED & documented:
        assert rows[key][2] == "linked"


@pytest.mark.parametrize("name", BUILTIN_ENCODERS)
def test_builtin_encoder_arguments_are_documented_with_their_defaults(name):
    (entry,) = [ep for ep in importlib.metadata.entry_points(group="fusionseg.encoders") if ep.name == name]
    rows = doc_rows()
    params = {p.name: p.default for p in inspect.signature(entry.load().__init__).parameters.values()
              if p.name != "self"}
    wrong = [expected_row(f"{name}.{p}", yaml_value(d)) for p, d in params.items()
             if rows.get(f"{name}.{p}", [None] * 3)[2] != yaml_value(d)]
    assert not wrong, f"rows to add or correct under ### `{name}`:\n" + "\n".join(wrong)
    assert {k for k in rows if k.startswith(f"{name}.")} == {f"{name}.{p}" for p in params}


def test_trainer_keys_the_configs_set_are_documented():
    rows = doc_rows()
    used = {f"trainer.{k}" for path in (REPO / "configs").glob("*.yaml")
            for k in (yaml.safe_load(path.read_text()).get("trainer") or {})}
    assert used, "no config sets a trainer key"
    assert not used - set(rows), f"docs/configuration.md lacks the trainer keys {sorted(used - set(rows))}"


def test_the_encoder_example_is_a_valid_model_section(tmp_path, capsys):
    (example,) = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)
    config = tmp_path / "example.yaml"
    config.write_text(example)
    with pytest.raises(SystemExit) as done:
        FusionSegCLI(args=["fit", "--config", str(config), "--print_config"])
    assert done.value.code in (0, None)
    model = yaml.safe_load(capsys.readouterr().out)["model"]
    master, aux = EncoderSpec.parse(model["master"]), EncoderSpec.parse(model["aux"])
    assert (master.name, aux.name) == ("dinov3", "sam2") and aux.args["size"] == "base_plus"
