"""`--port-offset` out of range: one line on stderr and exit 1, never a traceback or a wrap.

Before the check, `serve --port-offset 70000` bound to all addresses listened on 4489 and
4489 + 562 (getaddrinfo wraps the port modulo 65536); bound to one address it died with an
OverflowError traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from postwerk.roles.all_in_one import PortOffsetOutOfRange, check_port_offset
from tests.conftest import init_data_dir
from tests.integration.test_cli import assert_one_line_error, run

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("offset", ["70000", "56511", "-1"])
def test_serve_refuses_an_offset_that_leaves_the_port_range(
    tmp_path: Path, ca: trustme.CA, offset: str
) -> None:
    data_dir = tmp_path / "data"
    init_data_dir(data_dir, ca)  # listens on 25 and 587 (+ offset)
    result = run("serve", "--port-offset", offset, data_dir=data_dir)
    assert_one_line_error(result, f"port offset {offset} is out of range")
    # The highest port opened is the admin listener's 9025: 9025 + 56510 = 65535.
    assert "0 to 56510" in result.stderr
    assert not (data_dir / "postwerk.pid").exists()


def test_init_refuses_an_out_of_range_offset(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = run("init", "--domain", "example.test", "--port-offset", "70000", data_dir=data_dir)
    assert_one_line_error(result, "server.port_offset")
    assert not (data_dir / "postwerk.toml").exists()


def test_check_port_offset_bounds() -> None:
    check_port_offset(0, [25, 587])
    check_port_offset(65535 - 587, [25, 587])
    check_port_offset(70000, [])  # nothing to listen on
    for bad in (-1, 65535 - 587 + 1):
        with pytest.raises(PortOffsetOutOfRange):
            check_port_offset(bad, [25, 587])


def test_init_refuses_a_database_url_it_cannot_serve(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = run(
        "init", "--domain", "example.test", "--database", "mysql://db/x", data_dir=data_dir
    )
    assert_one_line_error(result, "--database takes sqlite:///PATH or postgresql://")
    assert not (data_dir / "postwerk.toml").exists()


def test_init_refuses_split_roles_without_a_shared_database(tmp_path: Path) -> None:
    for roles in ("cas", "mailbox"):
        data_dir = tmp_path / roles
        result = run("init", "--domain", "example.test", "--roles", roles, data_dir=data_dir)
        assert_one_line_error(result, f"--roles {roles}: Client Access and Mailbox")
        assert "--database postgresql://" in result.stderr
        assert not (data_dir / "postwerk.toml").exists()
