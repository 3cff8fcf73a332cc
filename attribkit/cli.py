"""The ``attribkit`` command. Thin: parse, call the API, present."""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__, plugins
from .console import ConsoleProgress, err_console
from .errors import AttribkitError
from .pipeline import DEMO
from .runtime import DEVICE_HELP, PRECISIONS, Runtime, parse_shard, worker_from_env
from .storage import IntegrityNotice, finite_or_null
from .training.config import TrainConfig
from .trust.saving import SAVED_AS

KIND_CHOICE = click.Choice(list(plugins.KINDS) + ["scenarios"])


class Group(click.Group):
    """Turns expected failures into one line on stderr and a non-zero exit."""

    def invoke(self, ctx):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", IntegrityNotice)
                warnings.showwarning = _show_notice(warnings.showwarning)
                return super().invoke(ctx)
        except AttribkitError as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            sys.exit(1)
        except click.UsageError as exc:  # a bad option or argument: one line too, not click's usage block
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
            err_console.print(f"[red]error:[/red] {escape(exc.format_message())}{hint}", highlight=False,
                              soft_wrap=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted:[/yellow] finished work is kept; run the same command to resume")
            sys.exit(130)


class RootGroup(Group):
    """The `attribkit` group: its own commands, then those that plugins add
    with register_commands. Plugins are asked only for a name that is not
    built in (or for the list, in --help), so a built-in command never waits
    for them, and none of theirs can stand in for one."""

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *plugins.add_commands(self)})

    def get_command(self, ctx, name):
        return super().get_command(ctx, name) or plugins.add_commands(self).get(name)


def _show_notice(fallback):
    """Integrity notices as one line each on stderr; other warnings as Python shows them."""
    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, IntegrityNotice):
            err_console.print(f"[yellow]notice:[/yellow] {message}", highlight=False, soft_wrap=True)
        else:
            fallback(message, category, filename, lineno, file, line)
    return show


NO_VERIFY = click.option("--no-verify", is_flag=True,
                         help="Read files without checking them against their recorded sha256 (see `attribkit verify`).")


def device_options(precision: bool = False):
    """--device and --tf32 (and training's --precision) for a command that computes."""
    def decorate(command):
        if precision:
            command = click.option(
                "--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
                help="Autocast for training: bf16 (CPU or GPU) or fp16 (GPU, with a gradient scaler); fp32: none. "
                     "Recorded in run.json.")(command)
        command = click.option(
            "--tf32", is_flag=True,
            help="Let CUDA round float32 matrix products and convolutions to TensorFloat-32: faster on recent GPUs, "
                 "but the results then differ from the CPU's by more than float32 rounding. Off unless given; "
                 "recorded.")(command)
        return click.option("--device", default="auto", envvar="ATTRIBKIT_DEVICE", show_default=True,
                            help=f"Where to compute: {DEVICE_HELP}. Also read from ATTRIBKIT_DEVICE.")(command)
    return decorate


STREAM = click.option("--stream", is_flag=True,
                      help="Read the data set's images from its files a batch at a time instead of loading them: "
                           "for data sets larger than memory (same results, bit for bit).")


def _runtime(device: str = "cpu", tf32: bool = False, precision: str = "fp32", shard: str | None = None,
             workers: bool = False, stream: bool = False) -> Runtime:
    """The one Runtime of this command, with rich progress bars. ``workers``: the command can be one of
    several workers (torchrun's RANK/WORLD_SIZE, or --shard); otherwise it must run alone."""
    rank, world = worker_from_env()
    if shard is not None:
        asked = parse_shard(shard)
        if world > 1 and asked != (rank, world):
            raise AttribkitError(f"--shard {shard} contradicts torchrun's RANK={rank} WORLD_SIZE={world}; "
                                 f"give one or the other")
        rank, world = asked
    if world > 1 and not workers:
        raise AttribkitError(f"this command runs as one process, not as worker {rank} of {world}: start it without "
                             f"torchrun")
    return Runtime(device=device, precision=precision, tf32=tf32, rank=rank, world_size=world, stream=stream,
                   progress=ConsoleProgress())


def _echo_json(data) -> None:
    click.echo(_strict_json(data, indent=2))


def _saved_as_formats(text: str) -> list[str]:
    """--saved-as: 'none', or formats separated by commas (case does not matter; an empty entry is a typo)."""
    names = [f.strip().lower() for f in text.split(",")]
    if names == ["none"]:
        return []
    if "none" in names:
        raise click.BadParameter("'none' stands alone: it cannot be combined with formats", param_hint="--saved-as")
    if "" in names:
        raise click.BadParameter(f"{text!r} has an empty entry; give formats separated by commas, or 'none'",
                                 param_hint="--saved-as")
    return names


def _strict_json(data, indent: int | None = None) -> str:
    """JSON any parser reads: NaN and ±inf (a value that does not apply, a degenerate score) become null."""
    return json.dumps(finite_or_null(data), indent=indent, default=str, allow_nan=False)


def _warn_plugin_errors() -> None:
    for line in plugins.registry().errors():
        err_console.print(f"[yellow]warning:[/yellow] {escape(line)} (see `attribkit plugins`)", highlight=False,
                          soft_wrap=True)


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
@click.pass_context
def plugins_cmd(ctx, as_json):
    """Installed plugins: version, hooks, what each registered, load errors."""
    plugins.add_commands(ctx.find_root().command)  # their commands and register_commands' errors are listed too
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
        from .generation.scenario import builtin_scenarios

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
@click.option("--epochs", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--seed", type=click.IntRange(-(2 ** 63), 2 ** 64 - 1), default=0, show_default=True)
@click.option("--force", is_flag=True, help="Retrain victims already in the zoo.")
@device_options()
@click.option("--json", "as_json", is_flag=True, help="Print the victims' metadata as JSON.")
def victims_train(dataset, zoo, archs, width, epochs, seed, force, device, tf32, as_json):
    """Train victim models (timm, pretrained=False) on clean images.

    Each victim is stored as safetensors with JSON metadata (family, timm
    name, width, data set, test accuracy, seed). Victims already in the zoo
    are kept unless --force.
    """
    from .data import load_dataset
    from .victims.train import train_zoo

    _warn_plugin_errors()
    rt = _runtime(device, tf32)
    archs, clean = archs or tuple(rt.plugins.names("victims")), load_dataset(dataset, rt.plugins)
    records = train_zoo(zoo, archs, clean, width=width, epochs=epochs, seed=seed, force=force, runtime=rt)
    _print_victims(records, as_json)


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
@click.option("--accept-versions", is_flag=True,
              help="Resume a data set begun with other library versions; each new shard records its versions.")
@device_options()
@click.option("--shard", metavar="I/N",
              help="Be worker I of N (from 0) sharing --out, e.g. in a job array; under torchrun, RANK and WORLD_SIZE "
                   "say it instead. Every worker computes the same split of the work, longest first.")
@click.option("--merge", is_flag=True,
              help="Only merge the records of the shards finished in --out into its manifest (after workers that "
                   "were killed), and mark it complete if every shard is there.")
@NO_VERIFY
@click.option("--json", "as_json", is_flag=True, help="Print the manifest's summary as JSON.")
def generate_cmd(scenario, out, zoo, accept_versions, device, tf32, shard, merge, no_verify, as_json):
    """Generate an adversarial-attribution data set from a scenario.

    Writes sharded safetensors (adversarial images; attack, victim and
    hyperparameter labels; success, margin, L2/L∞ norms) and manifest.json.
    Failed attacks are excluded and counted. Re-running into the same --out
    resumes: finished shards whose bytes match their recorded sha256 are
    kept, damaged or missing ones are made again (and reported). A data set
    begun with other library versions is refused unless --accept-versions.

    \b
    Several workers share one --out (see README, "Scaling out"):
      torchrun --nproc-per-node 8 -m attribkit generate ... --device auto
      attribkit generate ... --shard 3/8        # worker 3 of 8, e.g. in a job array
    The shards' bytes do not depend on how many workers made them.
    """
    from .generation.engine import generate, merge as merge_records, summarise
    from .generation.scenario import load_scenario

    _warn_plugin_errors()
    rt = _runtime(device, tf32, shard=shard, workers=True)
    sc = load_scenario(scenario, rt.plugins)
    if merge:
        from .storage import folder_lock
        from .storage.dataset import MANIFEST

        if not (Path(out) / MANIFEST).is_file():
            raise AttribkitError(f"--out {out!r} holds no attribkit data set to merge")
        with folder_lock(out):
            manifest = merge_records(out, sc, verify=not no_verify)
    else:
        manifest = generate(sc, out, zoo=zoo, verify=not no_verify, accept_versions=accept_versions, runtime=rt)
    summary = summarise(manifest)
    if as_json:
        _echo_json({**summary, "worker": f"{rt.rank}/{rt.world_size}"})
    elif manifest.status != "complete" and rt.world_size > 1:
        err_console.print(f"worker {rt.rank}/{rt.world_size}: its share is done; {out} is complete when the other "
                          f"workers finish theirs", highlight=False)
    else:
        _print_summary(summary, out)


def _print_summary(summary: dict, out: str) -> None:
    table = Table(title=f"{summary['scenario']} → {out} ({summary['status']})")
    for col in ("attack", "victim", "train", "test", "success rate"):
        table.add_column(col)
    for c in summary["cells"]:
        table.add_row(c["attack"], c["victim"], str(c["train"]), str(c["test"]),
                      f"{c['success_rate']:.1%}" if c["success_rate"] is not None else "–")
    Console().print(table)


# The order `attribkit train --help` lists TrainConfig's fields in (the
# fields' own order is run.json's and stays); a field not named here follows.
TRAIN_OPTION_ORDER = ("model", "backbone", "width", "epochs", "batch_size", "input_scale", "stem", "pool", "lr",
                      "schedule", "weight_decay", "validation", "per_cell", "quantize", "jpeg", "unknown_score",
                      "false_rejection", "loss", "regression",
                      "ae_weight", "perturbation", "task_specific", "fusion", "label_values", "heads", "attacks", "seed")
_CLICK_TYPES = {"str": str, "int": int, "float": float}


def _config_options(cls, order=()):
    """One option per field of the dataclass ``cls``, with the default, help,
    choices and bounds that the field's metadata declares (training/config.py):
    the class is the one place they are written. The option's parameter is
    the field's name, so the command can pass them on as ``cls(**options)``."""
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    ordered = [by_name[n] for n in order if n in by_name] + [f for f in by_name.values() if f.name not in order]

    def decorate(command):
        for f in reversed(ordered):  # click lists options in the order their decorators are written
            command = _field_option(f)(command)
        return command

    return decorate


def _field_option(f: dataclasses.Field):
    meta, flag = f.metadata, "--" + f.name.replace("_", "-")
    if f.type == "bool":  # a switch away from the default: --no-fusion, or --fusion for one that defaults off
        return click.option(meta.get("option", f"--no-{flag[2:]}" if f.default else flag), f.name, is_flag=True,
                            flag_value=not f.default, default=f.default, help=meta.get("help"))
    if f.type.startswith("tuple["):
        return click.option(meta.get("option", flag), f.name, multiple=True, help=meta.get("help"))
    if "choices" in meta:
        kind = click.Choice(list(meta["choices"]))
    elif "min" in meta or "max" in meta:
        kind = (click.IntRange if f.type == "int" else click.FloatRange)(
            meta.get("min"), meta.get("max"), min_open=meta.get("min_open", False), max_open=meta.get("max_open", False))
    else:
        kind = _CLICK_TYPES[f.type]
    return click.option(meta.get("option", flag), f.name, type=kind, default=f.default, show_default=True,
                        help=meta.get("help") or None)


@cli.command("train")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False), help="A generated data set.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="New run folder.")
@_config_options(TrainConfig, TRAIN_OPTION_ORDER)
@device_options(precision=True)
@STREAM
@NO_VERIFY
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
def train_cmd(data_dir, out, device, tf32, precision, stream, no_verify, as_json, **options):
    """Train an attribution model on a generated data set.

    Adam with cosine LR (the paper's settings by default). The run folder
    holds the resolved config, versions, seed, safetensors weights,
    per-epoch metrics (JSON + CSV) and the label spaces to attribute with.
    """
    _warn_plugin_errors()
    config = TrainConfig(**options)
    rt = _runtime(device, tf32, precision, workers=True, stream=stream)
    meta = _train(data_dir, config, out, verify=not no_verify, runtime=rt)
    summary = {"run": out, "model": config.model, "seconds": meta.seconds, "parameters": meta.parameters,
               "validation": meta.final_validation_metrics, "test": meta.final_test_metrics, "trust": meta.trust}
    if rt.rank != 0:  # worker 0 wrote the run and says so
        return
    if as_json:
        _echo_json(summary)
    else:
        _print_metrics(f"{config.model} → {out} ({meta.seconds:.0f} s)", meta.final_test_metrics)
        if meta.trust:
            u, fitted = meta.trust["unknown"], meta.trust["fitted"]["temperatures_and_threshold"]
            temperatures = ", ".join(f"{k} {v:.3g}" for k, v in meta.trust["temperatures"].items())
            Console().print(f"trust: unknown above {u['threshold']:.4g} ({u['method']}, chosen to call "
                            f"{100 * u['false_rejection']:g} % of the {fitted['examples']} validation images "
                            f"unknown); temperatures: {temperatures}", highlight=False)


def _train(data_dir, config, out, verify, runtime):
    from .training.trainer import train

    return train(data_dir, config, out, verify=verify, runtime=runtime)


def _print_trust(trust: dict) -> None:
    """The demo's trust numbers: calibration, clean images, attacks it never saw."""
    table = Table(title="trust (see evaluation.md, \"Trust\")")
    table.add_column("what")
    table.add_column("value", justify="right")
    pct = lambda v: "–" if v is None else f"{v:.2%}"
    for head, c in trust["calibration"].items():
        table.add_row(f"{head}: expected calibration error", f"{pct(c['ece'])} (uncalibrated {pct(c['ece_uncalibrated'])})")
    known = trust["evaluated_split"]
    if "rejected" in known:
        table.add_row("known test images called unknown", pct(known["rejected"]))
    if "clean" in known:
        table.add_row(f"clean test images called clean ({known['clean']['examples']})", pct(known["clean"]["recall"]))
        table.add_row("attack accuracy on the adversarial ones", pct(known["clean"]["attack_accuracy_adversarial"]))
    for outside in trust.get("unknown", []):
        for attack, g in outside["per_attack"].items():
            auroc = "–" if g.get("auroc") is None else f"{g['auroc']:.3f}"
            table.add_row(f"unseen attack {attack}: called unknown / AUROC", f"{pct(g.get('rejected'))} / {auroc}")
    Console().print(table)


def _print_metrics(title, metrics):
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v:.2f}" for k, v in value.items() if v is not None)
        elif isinstance(value, float):
            value = f"{value:.2%}" if key.endswith("accuracy") else f"{value:.2f}"
        table.add_row(key, str(value))
    Console().print(table)


@cli.command("attribute")
@click.option("--run", required=True, type=click.Path(file_okay=False), help="A run folder from `attribkit train`.")
@click.argument("inputs", nargs=-1, required=True)
@device_options()
@NO_VERIFY
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Images decoded and answered at a time: memory holds one batch, however many inputs.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: one JSON document, at the end.")
@click.option("--jsonl", "as_jsonl", is_flag=True,
              help="One JSON object per image, one per line, printed as each batch is answered (for scripts "
                   "over millions of files). If an image further on cannot be read, the lines already printed "
                   "stay printed and the command ends with an error naming it (exit status 1).")
def attribute_cmd(run, inputs, device, tf32, no_verify, batch_size, as_json, as_jsonl):
    """Say which attack, victim and hyperparameter made each image.

    Each image gets a verdict: `attributed` (the attack, victim and
    hyperparameter shown are the model's answer), `clean` (the run has a
    clean class and the image looks unattacked) or `unknown` (its score is
    above the threshold the run chose on its validation split). The score
    (`unknown_score`; by default how far the image's features lie from the
    nearest class the run was trained on) is higher the less the image looks
    like anything the run knows; for an `unknown` image the attack shown is
    only the nearest known one. Probabilities are calibrated on the
    validation split. README "Reading an attribution" says more.

    INPUTS are PNG/JPEG files, folders of them (walked in sorted path order),
    or .safetensors batches (tensor 'images', N×C×H×W in [0, 1]). Lossless
    conversions (grey RGB to one channel, opaque alpha) are made and
    reported; resizing or colour conversion would alter the perturbation, so
    such images are rejected.

    Every input is checked to exist (and a folder to hold an image) before
    any work starts; images are then decoded and answered --batch-size at a
    time. A damaged image is found when its batch is decoded: the command
    stops there with an error naming it.
    """
    from .attribution import SCHEMA, attribute, iter_attributions
    from .storage import sha256_file
    from .training.run import RUN_FILE

    if as_json and as_jsonl:
        raise click.UsageError("--json and --jsonl: choose one (one document at the end, or one line per image)")
    _warn_plugin_errors()
    runtime = _runtime(device, tf32)
    if as_jsonl:
        rows = iter_attributions(run, list(inputs), batch_size=batch_size, verify=not no_verify, runtime=runtime)
        stamp = {"schema": SCHEMA, "run_sha256": sha256_file(Path(run) / RUN_FILE)}  # each line stands alone
        for row in rows:
            click.echo(_strict_json({**stamp, **row}))  # echo flushes: each line is out as soon as known
        return
    report = attribute(run, list(inputs), verify=not no_verify, runtime=runtime, batch_size=batch_size)
    shown = report.pop("table")  # the answers as text, one column per answer of every head
    if as_json:
        _echo_json(report)
        return
    threshold = report["unknown_threshold"]
    table = Table(title=f"attribution by {report['model']} ({run})" + (
        f"; verdict (unknown score): unknown above {threshold:.3g}" if threshold is not None
        else "; uncalibrated, no unknown threshold"))
    # a column no image fills (no conversion to note) would only squeeze the paths
    kept = [i for i, col in enumerate(shown["columns"]) if any(row[i] not in ("", "–") for row in shown["rows"])]
    for i in kept:
        table.add_column(shown["columns"][i], overflow="fold")
    for row in shown["rows"]:
        table.add_row(*(row[i] for i in kept))
    Console().print(table)


@cli.command("evaluate")
@click.option("--run", required=True, type=click.Path(file_okay=False), help="The run to evaluate.")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False), help="A generated data set.")
@click.option("--baseline", "baselines", multiple=True, type=click.Path(file_okay=False),
              help="A baseline run (single-task, cnn, …), for Δ_MTL (eq. 15); repeat for several rows.")
@click.option("--split", type=click.Choice(["test", "validation", "train"]), default="test", show_default=True,
              help="validation: the run's held-out training images (see `train --validation`).")
@click.option("--out", type=click.Path(file_okay=False), help="Report folder (default RUN/evaluation).")
@click.option("--unknown", "unknown", multiple=True, type=click.Path(file_okay=False),
              help="A data set of attacks (or victims) outside the run: its test split is scored against the "
                   "evaluated split (AUROC, FPR@95TPR, rejected at the run's threshold, what its images were "
                   "called, victim family accuracy). Repeat for several.")
@click.option("--saved-as", "saved_as", default=",".join(SAVED_AS), show_default=True,
              help="Also score the split's images re-encoded as each of these (comma-separated: float, png, "
                   "jpegQ for a JPEG quality Q from 1 to 100), with the accuracies and verdicts each gives; "
                   "'none' for none.")
@device_options()
@STREAM
@NO_VERIFY
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def evaluate_cmd(run, data_dir, baselines, split, out, unknown, saved_as, device, tf32, stream, no_verify, as_json):
    """Accuracy, hyperparameter RMSE (ε×255, κ), per-attack × victim tables,
    Δ_MTL against baselines, parameters and FLOPs, and the paper's figures
    (t-SNE of the features, perturbations per attack and victim, training
    curves, confusion matrices, per-cell heat maps, RMSE per value); written
    as evaluation.json, evaluation.md, PNGs and one self-contained report.html.

    The trust section: expected calibration error and a reliability diagram,
    clean recall (with a clean class), known images called unknown, the
    --unknown data sets, and accuracy with the images saved as PNG or JPEG."""
    from .evaluation import evaluate

    _warn_plugin_errors()
    formats = _saved_as_formats(saved_as)
    report = evaluate(run, data_dir, list(baselines), out, split, verify=not no_verify,
                      runtime=_runtime(device, tf32, stream=stream), unknown=list(unknown), saved_as=formats)
    if as_json:
        _echo_json(report)
        return
    from rich.markdown import Markdown

    text = Path(report["out"], "evaluation.md").read_text()
    Console().print(Markdown("\n".join(line for line in text.splitlines() if not line.startswith("!["))))
    err_console.print(f"written to {report['out']}/: report.html (every table and figure in one page), "
                      f"evaluation.json, evaluation.md and {len(report['plots'])} PNGs")


@cli.command("verify")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--record", is_flag=True, help="Record hashes for files that have none (folders written by an older "
                                             "attribkit); never replaces a hash that disagrees.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def verify_cmd(path, record, as_json):
    """Check a data set, zoo or run folder against the sha256 recorded when it was written.

    Lists every file with its state: ok, changed (bytes differ from the
    record), missing, or unrecorded (written before attribkit recorded
    hashes; --record records them as they are now). Exits 1 if anything is
    not ok. The hashes find rot and accidents, not tampering.
    """
    from .verification import verify

    result = verify(path, record=record)
    if as_json:
        _echo_json(result.to_json())
    else:
        table = Table(title=f"{result.kind} {path}")
        for col in ("file", "state", "detail"):
            table.add_column(col, overflow="fold")
        colour = {"ok": "green", "changed": "red", "missing": "red", "unrecorded": "yellow"}
        for f in result.files:
            table.add_row(f.name, f"[{colour[f.state]}]{f.state}", f.detail)
        for problem in result.problems:
            table.add_row("", "[red]damaged", problem)
        Console().print(table)
        for name in result.leftovers:
            err_console.print(f"[yellow]notice:[/yellow] {name} is a temporary file left by an interrupted write; "
                              f"safe to delete", highlight=False, soft_wrap=True)
        if result.recorded:
            err_console.print(f"recorded hashes for {len(result.recorded)} file(s)", highlight=False)
    if not result.ok:
        bad = [f for f in result.files if f.state != "ok"]
        unrecorded = all(f.state == "unrecorded" for f in bad) and not result.problems
        hint = f"; `attribkit verify --record {path}` records them" if unrecorded else ""
        if result.problems:  # a record itself is damaged: its files could not even be listed
            raise AttribkitError(f"{result.kind} {path!r} failed verification: {'; '.join(result.problems[:2])}")
        named = ", ".join(f"{f.name} ({f.state})" for f in bad[:3]) + (", …" if len(bad) > 3 else "")
        raise AttribkitError(f"{result.kind} {path!r}: {len(bad)} of {len(result.files)} files failed verification: "
                             f"{named}{hint}")


@cli.command("demo")
@click.option("--out", default="attribkit-demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the demo's zoo and data set (reused if it exists).")
@click.option("--scenario", default="quick", show_default=True,
              help="Scenario TOML file or built-in name; its victims must be victim architectures.")
@click.option("--victim-epochs", type=click.IntRange(min=1), default=DEMO["victim_epochs"], show_default=True)
@click.option("--victim-width", type=float, default=None, help="Victims' width (default: the architecture's, 0.25).")
@click.option("--backbone", default=DEMO["backbone"], show_default=True,
              help="MTAA backbone (see `attribkit list backbones`).")
@click.option("--epochs", type=click.IntRange(min=1), default=DEMO["epochs"], show_default=True,
              help="MTAA training epochs.")
@click.option("--width", type=float, default=DEMO["width"], show_default=True, help="MTAA backbone width.")
@click.option("--input-scale", type=click.IntRange(min=1), default=DEMO["input_scale"], show_default=True,
              help="Nearest-neighbour upscale before the backbone (1 = none).")
@device_options(precision=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def demo_cmd(out, scenario, victim_epochs, victim_width, backbone, epochs, width, input_scale, device, tf32, precision,
             as_json):
    """The whole pipeline on the embedded MNIST digits, no downloads.

    Trains the quick scenario's victims (ResNet18, VGG16, InceptionV3) into
    OUT/zoo, generates the quick adversarial data set into OUT/data, trains
    MTAA into OUT/run and evaluates it on the test split (OUT/run/evaluation/
    report.html). Steps already done in OUT are reused. The options make a
    smaller demo (or a test) of it, or a slower, more accurate one:
    `--width 1 --epochs 20` (about 7 times the MTAA training time) met all
    three of docs/results.md's aims on the demo's data (3 seeds) and beat the
    plain CNN baseline on every signature of a wider test split.
    """
    from .generation.scenario import load_scenario
    from .pipeline import demo

    _warn_plugin_errors()
    rt = _runtime(device, tf32, precision)
    sc = load_scenario(scenario, rt.plugins)  # here too for its name, in the title
    report = demo(out, sc, victim_epochs=victim_epochs, victim_width=victim_width, backbone=backbone, epochs=epochs,
                  width=width, input_scale=input_scale, runtime=rt)
    if as_json:
        _echo_json(report)
    else:
        signatures = [k for k, d in report["scores"].items() if d["signature"]]
        shown = [k for key in signatures for k in (key, f"{key}_per_attack") if k in report]
        _print_metrics(f"demo: MTAA on the {sc.name} scenario ({report['seconds']:.0f} s in all)",
                       {k: report[k] for k in shown + ["parameters_m", "gflops"]})
        _print_trust(report["trust"])
        err_console.print(f"report: {report['out']}/evaluation.md")


def main() -> None:
    cli(prog_name="attribkit")
