from tests.notify.conftest import estate_store  # noqa: F401  (the simulated estate after detection)
