"""Constants of the shared simulated CBC events; the fixtures that use them
(``mock_events``, ``mock_events_with_duplicates``) live in tests/conftest.py
so that the Django-level tests share the same few simulations."""
from tests.mock_data import (DUPLICATES_SEED, DUPLICATES_SOURCE_COUNT, MOCK_SEED,  # noqa: F401
                             MOCK_SOURCE_COUNT, MOCK_START_GPS)
