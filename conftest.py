# The adapt fixtures (tiny models, data, the CLI runner) for every test folder of the repository.
pytest_plugins = ["adapt.testing.fixtures"]
