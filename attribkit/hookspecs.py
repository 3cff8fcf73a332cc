"""The only hook definitions. Every ``register_<kind>`` hook hands the plugin
a ``register`` callback, so hooks can grow arguments later without breaking
old plugins; ``register_commands`` hands it the click group instead, as the
``llm`` tool's hook of the same name does, so plugins written for that
pattern read the same here."""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("attribkit")
hookimpl = pluggy.HookimplMarker("attribkit")


@hookspec
def register_attacks(register):
    """Call ``register(AttackSpec(...))`` for each attack algorithm."""


@hookspec
def register_victims(register):
    """Call ``register(VictimSpec(...))`` for each victim architecture."""


@hookspec
def register_backbones(register):
    """Call ``register(BackboneSpec(...))`` for each attribution backbone."""


@hookspec
def register_heads(register):
    """Call ``register(HeadSpec(...))`` for each task head."""


@hookspec
def register_datasets(register):
    """Call ``register(DatasetSpec(...))`` for each clean-image source."""


@hookspec
def register_commands(cli):
    """Add commands to ``attribkit``: called with the root click group; a
    plugin adds ``@cli.command()`` functions (or ``cli.add_command(...)``).

    A command cannot replace a built-in one, nor another plugin's of the same
    name (the first plugin keeps it); each refusal, and any exception the
    hook raises, is reported by ``attribkit plugins``, and every other
    command keeps working.
    """
