"""Seeds and times of the simulated events shared by the tests.

Simulating a source costs about half a second, so the session-scoped
fixtures in tests/conftest.py make a few once; their output depends only on
these constants.
"""
#: Seed and start time of the shared mock events (GPS 1400000000 is
#: 2024-05-17 16:53:02 UTC).
MOCK_SEED = 2024
MOCK_START_GPS = 1_400_000_000
MOCK_SOURCE_COUNT = 4

#: Seed and number of sources of the near-duplicate set.
DUPLICATES_SEED = 7
DUPLICATES_SOURCE_COUNT = 2
