"""Shared pytest fixtures: seeds that are recorded and replayable.

Every randomized test takes its seed from ``SECATEUR_TB_SEED`` if set (to replay a failure),
else derives a fixed one from the test id; the seed is always printed in failure messages.
"""

import hashlib
import os

import pytest


@pytest.fixture
def seed(request) -> int:
    if "SECATEUR_TB_SEED" in os.environ:
        return int(os.environ["SECATEUR_TB_SEED"])
    return int(hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:8], 16)
