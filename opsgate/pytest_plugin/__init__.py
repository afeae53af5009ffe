"""The pytest plugin that makes a plain `pytest` the release gate."""
