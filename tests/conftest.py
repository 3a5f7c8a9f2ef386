"""Every async test runs on uvloop, the loop the proxy ships with."""

import pytest
import uvloop

from tests.farm_fixture import CertKey, make_cert


@pytest.fixture(scope="session")
def event_loop_policy():
    return uvloop.EventLoopPolicy()


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> dict[str, CertKey]:
    """A certificate the proxy trusts (via ca_file) and an unrelated self-signed one."""
    directory = tmp_path_factory.mktemp("certs")
    return {"good": make_cert(directory, "good"), "bad": make_cert(directory, "bad")}
