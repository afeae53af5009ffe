"""Loads the opsgate plugin for this rootdir (pyproject.toml's addopts loads it first, by
name; this keeps it loaded under ``-o addopts=``); everything else lives in ``opsgate/``."""

pytest_plugins = ["opsgate.pytest_plugin.plugin"]
