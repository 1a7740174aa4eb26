from tests.speed.conftest import fresh_dsn  # noqa: F401  (a fresh database per test)
