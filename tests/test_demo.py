"""`attribkit demo`: the whole pipeline in one command, and a second run that reuses it."""

import contextlib
import json

from click.testing import CliRunner

import attribkit
from attribkit.cli import cli
from attribkit.storage.dataset import read_manifest

# the 8-px digits keep the whole pipeline to a few seconds
SCENARIO = """
name = "demo-test"
dataset = "digits"
victims = ["resnet18"]
batch_size = 16
max_attempts_factor = 2

[cells]
train = 8
test = 4

[[attacks]]
name = "fgsm"
grid.eps = [60, 180]
"""


def _files(out):
    # evaluation/ is the report, written afresh by each run; the manifest is rewritten on resume
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in sorted(out.rglob("*"))
            if p.is_file() and "evaluation" not in p.parts and p.name != "manifest.json"}


def test_demo_runs_every_step_once_and_reuses_them_the_second_time(tmp_path):
    (tmp_path / "tiny.toml").write_text(SCENARIO)
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--scenario", str(tmp_path / "tiny.toml"), "--victim-epochs", "1",
            "--victim-width", "0.0625", "--epochs", "1", "--width", "0.125", "--input-scale", "1", "--json"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    made = _files(out)
    assert {"zoo/resnet18.safetensors", "zoo/resnet18.json", "data/clean.safetensors", "run/run.json",
            "run/weights.safetensors"} <= set(made)
    assert sum(name.startswith("data/shards/") and name.endswith(".safetensors") for name in made) == 2  # one victim × one attack × two splits
    assert sum(name.startswith("unknown/shards/") and name.endswith(".safetensors") for name in made) == 4  # 2 attacks
    shards = read_manifest(out / "data").shards

    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0, second.output
    assert "resnet18: already in" in second.stderr
    assert _files(out) == made  # no victim, shard or run was written again
    assert read_manifest(out / "data").shards == shards
    reports = [json.loads(r.stdout) for r in (first, second)]
    for report in reports:
        report.pop("seconds")  # wall-clock time: the one field that differs between two runs
    assert reports[0] == reports[1]  # the same run, evaluated on the same data
    assert reports[0]["run"] == str(out / "run") and reports[0]["data"] == str(out / "data")
    run = json.loads((out / "run" / "run.json").read_text())
    assert (run["config"]["epochs"], run["config"]["width"], run["config"]["input_scale"]) == (1, 0.125, 1)
    assert json.loads((out / "zoo" / "resnet18.json").read_text())["width"] == 0.0625


class Recorder:
    """A progress sink that keeps what the stages report: stage names, bars and their last state."""

    def __init__(self):
        self.stages, self.bars, self.notes = [], {}, []

    def stage(self, name):
        self.stages.append(name)
        return contextlib.nullcontext()

    def task(self, description, total, completed=0):
        bar = self.bars[description] = {"total": total, "completed": completed, "info": None, "done": False}

        class Bar:
            def update(self, *, advance=0, completed=None, total=None, info=None):
                bar["completed"] = bar["completed"] + advance if completed is None else completed
                bar.update({k: v for k, v in (("total", total), ("info", info)) if v is not None})

            def done(self, info=None, keep=True):
                bar["done"] = True
        return Bar()

    def note(self, message):
        self.notes.append(message)


def test_the_demo_runs_from_a_notebook_without_any_console_output(tmp_path, capsys):
    (tmp_path / "tiny.toml").write_text(SCENARIO)  # 8-px digits: the whole pipeline in seconds
    progress = Recorder()
    report = attribkit.demo(tmp_path / "demo", str(tmp_path / "tiny.toml"), victim_epochs=1, victim_width=0.0625,
                            epochs=1, width=0.125, runtime=attribkit.Runtime(progress=progress))
    assert capsys.readouterr() == ("", "")
    assert "tables" not in report and report["seconds"] > 0 and report["run"] == str(tmp_path / "demo" / "run")
    assert {"attack_accuracy", "victim_accuracy", "hp_rmse", "out"} <= set(report)
    # every stage reported to the one sink, in one shape, and every bar it opened was finished
    # the second "generate" makes the attacks outside the scenario (quick-unknown) that the report scores
    assert progress.stages == ["victims", "generate", "generate", "train"]
    assert {"train resnet18", "all cells", "resnet18 · fgsm · train", "resnet18 · square · test",
            "train mtaa"} <= set(progress.bars)
    assert all(bar["done"] for bar in progress.bars.values())
    # the last "all cells" bar is the unknown attacks': square and bim × 2 values × (1 train + 10 test)
    assert progress.bars["all cells"]["completed"] == progress.bars["all cells"]["total"] == 2 * 2 * (1 + 10)
    unknown = report["trust"]["unknown"][0]
    assert unknown["data"] == str(tmp_path / "demo" / "unknown") and set(unknown["per_attack"]) <= {"square", "bim"}
    assert progress.bars["train mtaa"]["completed"] == progress.bars["train mtaa"]["total"]
    assert progress.bars["train mtaa"]["info"].startswith("ep 1/1 loss ") and "attack " in progress.bars["train mtaa"]["info"]
    again = Recorder()
    attribkit.demo(tmp_path / "demo", str(tmp_path / "tiny.toml"), victim_epochs=1, victim_width=0.0625,
                   epochs=1, width=0.125, runtime=attribkit.Runtime(progress=again))
    assert again.notes == [f"resnet18: already in {tmp_path / 'demo' / 'zoo'} (use --force to retrain)"]
