"""The ``attribkit`` command. Thin: parse, call the API, present."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from . import __version__, plugins
from .console import GenerateProgress, err_console, make_progress
from .errors import AttribkitError

KIND_CHOICE = click.Choice(list(plugins.KINDS) + ["scenarios"])


class Group(click.Group):
    """Turns expected failures into one line on stderr and a non-zero exit."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except AttribkitError as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            sys.exit(1)
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted:[/yellow] finished work is kept; run the same command to resume")
            sys.exit(130)


def _echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _warn_plugin_errors() -> None:
    for line in plugins.registry().errors():
        err_console.print(f"[yellow]warning:[/yellow] {line} (see `attribkit plugins`)", highlight=False)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="attribkit")
def cli():
    """Adversarial attack attribution: given an adversarial image, tell which
    attack made it, against which victim model, with which hyperparameter.

    \b
    Typical run on the embedded MNIST digits:
      attribkit victims train --out zoo/
      attribkit generate --scenario quick --out data/quick
    """


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins_cmd(as_json):
    """Installed plugins: version, hooks, what each registered, load errors."""
    reg = plugins.registry()
    infos = sorted(reg.plugins.values(), key=lambda p: (p.source != "builtin", p.name))
    if as_json:
        _echo_json([p.__dict__ for p in infos])
        return
    table = Table(title="attribkit plugins")
    for col in ("plugin", "source", "version", "hooks", "registered", "errors"):
        table.add_column(col, overflow="fold")
    for p in infos:
        registered = "\n".join(f"{k}: {', '.join(v)}" for k, v in p.registered.items())
        table.add_row(p.name, p.source, p.version, "\n".join(p.hooks), registered,
                      "[red]" + "\n".join(p.errors) if p.errors else "")
    Console().print(table)


def _describe(kind: str, spec) -> dict:
    if kind == "attacks":
        return {"name": spec.name, "norm": spec.norm, "targeted": spec.targeted, "library": spec.library,
                "hyperparameters": [{"name": h.name, "symbol": h.symbol, "unit": h.unit, "scale": h.scale,
                                     "grid": list(h.grid)} for h in spec.hyperparameters],
                "settings": dict(spec.settings), "description": spec.description}
    if kind == "victims":
        return {"name": spec.name, "family": spec.family, "timm_name": spec.timm_name, "min_size": spec.min_size,
                "default_width": spec.default_width, "description": spec.description}
    return {"name": spec.name, "description": getattr(spec, "description", "")}


@cli.command("list")
@click.argument("kind", type=KIND_CHOICE)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_cmd(kind, as_json):
    """List registered attacks, victims, backbones, heads, datasets or built-in scenarios."""
    if kind == "scenarios":
        from .generate.scenario import builtin_scenarios

        rows = [{"name": n, "path": str(p)} for n, p in sorted(builtin_scenarios().items())]
    else:
        _warn_plugin_errors()
        reg = plugins.registry()
        rows = [{**_describe(kind, reg.tables[kind][n].spec), "plugin": reg.tables[kind][n].plugin}
                for n in reg.names(kind)]
    if as_json:
        _echo_json(rows)
        return
    table = Table(title=f"{kind} ({len(rows)})")
    columns = [c for c in rows[0] if c not in ("settings",)] if rows else ["name"]
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*[_cell(row[c]) for c in columns])
    Console().print(table)


def _cell(value) -> str:
    if isinstance(value, list) and value and isinstance(value[0], dict):  # hyperparameters
        return "\n".join(f"{h['symbol'] or h['name']}: {_grid_text(h['grid'])}{h['unit']}" for h in value)
    return "" if value is None else str(value)


def _grid_text(grid) -> str:
    g = [f"{v:g}" for v in grid]
    return ", ".join(g) if len(g) <= 4 else f"{g[0]}…{g[-1]} ({len(g)} values)"


@cli.group("victims", cls=Group)
def victims_cmd():
    """Train and inspect the victim zoo."""


@victims_cmd.command("train")
@click.option("--dataset", default="mnist5k", show_default=True, help="Data set name (see `attribkit list datasets`).")
@click.option("--out", "zoo", default="zoo", show_default=True, type=click.Path(file_okay=False),
              help="Zoo folder: NAME.safetensors + NAME.json per victim.")
@click.option("--arch", "archs", multiple=True, help="Victim architecture (repeatable). Default: all registered.")
@click.option("--width", type=float, default=None, help="Width multiplier (default: the architecture's, 0.25).")
@click.option("--epochs", type=int, default=8, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--force", is_flag=True, help="Retrain victims already in the zoo.")
@click.option("--json", "as_json", is_flag=True, help="Print the victims' metadata as JSON.")
def victims_train(dataset, zoo, archs, width, epochs, seed, force, as_json):
    """Train victim models (timm, pretrained=False) on clean images.

    Each victim is stored as safetensors with JSON metadata (family, timm
    name, width, data set, test accuracy, seed). Victims already in the zoo
    are kept unless --force.
    """
    from .data import load_dataset

    _warn_plugin_errors()
    records = _train_victims(zoo, archs or tuple(plugins.registry().names("victims")), load_dataset(dataset),
                             width=width, epochs=epochs, seed=seed, force=force)
    _print_victims(records, as_json)


def _train_victims(zoo, archs, dataset, **kwargs):
    from .victims.train import train_zoo

    with make_progress() as progress:
        tasks = {}

        def on_start(arch):
            tasks[arch] = progress.add_task(f"train {arch}", total=1, info="")
            return lambda step, total, loss: progress.update(tasks[arch], total=total, completed=step,
                                                             info=f"loss {loss:.3f}")

        def on_done(record, trained):
            if trained:
                progress.update(tasks[record.architecture], info=f"test acc {record.test_accuracy:.2%}")
            else:
                err_console.print(f"{record.name}: already in {zoo} (use --force to retrain)")

        return train_zoo(zoo, archs, dataset, on_start=on_start, on_done=on_done, **kwargs)


def _print_victims(records, as_json):
    if as_json:
        _echo_json([r.__dict__ for r in records])
        return
    table = Table(title="victim zoo")
    for col in ("name", "family", "timm", "width", "input", "test acc", "train s"):
        table.add_column(col)
    for r in records:
        table.add_row(r.name, r.family, r.timm_name, f"{r.width:g}",
                      f"{r.in_chans}×{r.image_size}" + (f"→{r.resize_to}" if r.resize_to else ""),
                      f"{r.test_accuracy:.2%}" if r.test_accuracy is not None else "?",
                      str(r.training.get("seconds", "")))
    Console().print(table)


@victims_cmd.command("list")
@click.option("--zoo", default="zoo", show_default=True, type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True)
def victims_list(zoo, as_json):
    """Show the victims stored in a zoo folder."""
    from .victims.store import read_record

    if not Path(zoo).is_dir():
        raise AttribkitError(f"zoo {zoo!r} does not exist (run `attribkit victims train --out {zoo}`)")
    _print_victims([read_record(zoo, p.stem) for p in sorted(Path(zoo).glob("*.json"))], as_json)


@cli.command("generate")
@click.option("--scenario", required=True, help="Scenario TOML file, or a built-in name (`attribkit list scenarios`).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Data set folder (resumed if it exists).")
@click.option("--zoo", default=None, type=click.Path(file_okay=False), help="Victim zoo (default: the scenario's).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest's summary as JSON.")
def generate_cmd(scenario, out, zoo, as_json):
    """Generate an adversarial-attribution data set from a scenario.

    Writes sharded safetensors (adversarial images; attack, victim and
    hyperparameter labels; success, margin, L2/L∞ norms) and manifest.json.
    Failed attacks are excluded and counted. Re-running into the same --out
    resumes: finished shards are kept.
    """
    from .generate.engine import generate
    from .generate.scenario import load_scenario

    _warn_plugin_errors()
    sc = load_scenario(scenario)
    with make_progress() as progress:
        manifest = generate(sc, out, zoo=zoo, progress=GenerateProgress(progress))
    summary = _summarise(manifest)
    if as_json:
        _echo_json(summary)
    else:
        _print_summary(summary, out)


def _summarise(manifest: dict) -> dict:
    cells = {}
    for shard in manifest["shards"].values():
        key = (shard["attack"], shard["victim"])
        c = cells.setdefault(key, {"attack": shard["attack"], "victim": shard["victim"], "train": 0, "test": 0,
                                   "attempted": 0, "succeeded": 0})
        c[shard["split"]] += shard["examples"]
        c["attempted"] += sum(x["attempted"] for x in shard["cells"])
        c["succeeded"] += sum(x["succeeded"] for x in shard["cells"])
    for c in cells.values():
        c["success_rate"] = round(c["succeeded"] / c["attempted"], 4) if c["attempted"] else None
    return {"scenario": manifest["scenario"]["name"], "status": manifest["status"], "totals": manifest.get("totals"),
            "cells": list(cells.values())}


def _print_summary(summary: dict, out: str) -> None:
    table = Table(title=f"{summary['scenario']} → {out} ({summary['status']})")
    for col in ("attack", "victim", "train", "test", "success rate"):
        table.add_column(col)
    for c in summary["cells"]:
        table.add_row(c["attack"], c["victim"], str(c["train"]), str(c["test"]),
                      f"{c['success_rate']:.1%}" if c["success_rate"] is not None else "–")
    Console().print(table)


@cli.command("demo")
@click.option("--out", default="attribkit-demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the demo's zoo and data set (reused if it exists).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def demo_cmd(out, as_json):
    """The whole pipeline on the embedded MNIST digits, no downloads.

    Trains the quick scenario's victims (ResNet18, VGG16, InceptionV3) into
    OUT/zoo and generates the quick adversarial data set into OUT/data.
    """
    from .data import load_dataset
    from .generate.engine import generate
    from .generate.scenario import load_scenario

    _warn_plugin_errors()
    sc = load_scenario("quick")
    zoo, data = Path(out) / "zoo", Path(out) / "data"
    _train_victims(zoo, [v.name for v in sc.victims], load_dataset(sc.dataset))
    with make_progress() as progress:
        manifest = generate(sc, data, zoo=zoo, progress=GenerateProgress(progress))
    summary = _summarise(manifest)
    if as_json:
        _echo_json(summary)
    else:
        _print_summary(summary, str(data))


def main() -> None:
    cli(prog_name="attribkit")
