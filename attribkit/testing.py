"""Helpers for testing plugins: a clean registry, and a plugin object
registered for the length of a ``with`` block.

    from attribkit.testing import clean_registry, registered

    @pytest.fixture(autouse=True)
    def fresh_plugins():
        with clean_registry():
            yield

    def test_my_head():
        with registered(MyHeadPlugin(), "my-heads"):
            ...   # attribkit sees the plugin here, and not after
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from . import plugins


@contextmanager
def clean_registry() -> Iterator[None]:
    """Forget every loaded plugin before and after: each test loads what is
    installed (or only the built-ins, with ATTRIBKIT_DISABLE_PLUGIN_AUTOLOAD=1)
    plus what it registers itself."""
    plugins.reset()
    try:
        yield
    finally:
        plugins.reset()


@contextmanager
def registered(plugin: object, name: str) -> Iterator[plugins.Registry]:
    """Register a plugin object (a class instance or module with hook
    implementations) as if it were installed; unregister it afterwards."""
    plugins.load_plugins()
    plugins.pm.register(plugin, name=name)
    try:
        yield plugins.refresh()
    finally:
        plugins.pm.unregister(name=name)
        plugins.refresh()
