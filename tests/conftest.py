"""Every async test runs on uvloop, the loop the proxy ships with."""

import pytest
import uvloop


@pytest.fixture(scope="session")
def event_loop_policy():
    return uvloop.EventLoopPolicy()
