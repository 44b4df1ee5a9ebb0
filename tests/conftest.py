"""Session-wide real services live in tests/fixtures/ (one module per service), registered here."""
pytest_plugins = [
    "tests.fixtures.tiny_model",
    "tests.fixtures.kafka",
    "tests.fixtures.worker",
    "tests.fixtures.triton",
    "tests.fixtures.prometheus",
]
