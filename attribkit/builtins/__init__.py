"""The built-in plugins. Each module is registered exactly like a third-party
entry point (see attribkit.plugins.DEFAULT_PLUGINS)."""
