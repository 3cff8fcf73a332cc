"""The only hook definitions. Every hook hands the plugin a ``register``
callback, so hooks can grow arguments later without breaking old plugins."""

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
