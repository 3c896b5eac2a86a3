"""The /etc files of a container without a network: what Docker would have written."""

from __future__ import annotations

from pathlib import Path

import pytest

from hatchway.engines import offline_etc
from hatchway.engines.offline_etc import HOSTS, OfflineEtcFiles, resolv_conf, write_offline_etc


def test_the_hosts_nameservers_are_kept_with_search_and_options() -> None:
    host = "# generated\nsearch example.org\nnameserver 10.0.0.2\nnameserver 1.1.1.1\noptions ndots:2\n"
    assert resolv_conf(host) == host


def test_nameservers_a_container_cannot_reach_are_dropped() -> None:
    host = (
        "nameserver 127.0.0.1\nnameserver 192.0.2.53\nnameserver ::1\nnameserver 2001:db8::1\nnameserver fe80::1%eth0\n"
    )
    assert resolv_conf(host) == "nameserver 192.0.2.53\n"


def test_dockers_defaults_when_none_is_left() -> None:
    assert resolv_conf("search lan\nnameserver 127.0.0.11\n") == "search lan\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    assert resolv_conf("") == "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"


def test_systemd_resolved_stub_is_replaced_by_its_real_list() -> None:
    stub = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n"
    real = "nameserver 192.0.2.1\nsearch corp\n"
    assert resolv_conf(stub, real) == real
    assert resolv_conf("nameserver 192.0.2.9\n", real) == "nameserver 192.0.2.9\n"  # no stub: the host's own


def test_files_are_written_once_in_a_folder_named_by_their_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = tmp_path / "resolv.conf"
    host.write_text("nameserver 192.0.2.1\n")
    monkeypatch.setattr(offline_etc, "HOST_RESOLV_CONF", host)
    monkeypatch.setattr(offline_etc, "RESOLVED_RESOLV_CONF", tmp_path / "absent")
    first = write_offline_etc(tmp_path / "etc")
    assert first.hosts.read_text() == HOSTS and first.resolv_conf.read_text() == "nameserver 192.0.2.1\n"
    assert oct(first.resolv_conf.stat().st_mode & 0o777) == "0o644"
    assert write_offline_etc(tmp_path / "etc") == first
    host.write_text("nameserver 192.0.2.2\n")  # the host's changed: a new folder, the old files untouched
    second = write_offline_etc(tmp_path / "etc")
    assert second.resolv_conf.parent != first.resolv_conf.parent
    assert first.resolv_conf.read_text() == "nameserver 192.0.2.1\n"
    assert second.resolv_conf.read_text() == "nameserver 192.0.2.2\n"


def test_the_files_follow_the_hosts_resolv_conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = tmp_path / "resolv.conf"
    host.write_text("nameserver 192.0.2.1\n")
    monkeypatch.setattr(offline_etc, "HOST_RESOLV_CONF", host)
    monkeypatch.setattr(offline_etc, "RESOLVED_RESOLV_CONF", tmp_path / "absent")
    files = OfflineEtcFiles(tmp_path / "etc")
    first = files()
    assert files() is first  # nothing changed: not written again
    host.write_text("nameserver 192.0.2.22\n")  # as DHCP would rewrite it
    assert files().resolv_conf.read_text() == "nameserver 192.0.2.22\n"
    assert first.resolv_conf.read_text() == "nameserver 192.0.2.1\n"  # what running containers mount stays
