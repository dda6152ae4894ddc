# The fixtures adapt ships for plugin authors: tiny models, data and the CLI runner.
pytest_plugins = ["adapt.testing.fixtures"]
