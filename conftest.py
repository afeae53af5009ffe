"""Loads the opsgate plugin for this rootdir; everything else lives in ``opsgate/``."""

pytest_plugins = ["opsgate.pytest_plugin.plugin"]
