"""Thread settings: the cores a process may use, the FUSIONSEG_NUM_THREADS override, data-loader workers."""

from __future__ import annotations

import pytest
import torch

import fusionseg.cli as cli
from fusionseg import threads


@pytest.fixture
def restore_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_available_cores_follow_the_affinity_mask_and_the_container_quota(monkeypatch, tmp_path):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    cpu_max = tmp_path / "cpu.max"
    monkeypatch.setattr(threads, "CGROUP_V2", cpu_max)
    cpu_max.write_text("max 100000\n")
    assert threads.available_cores() == 8  # no quota
    cpu_max.write_text("150000 100000\n")  # docker --cpus=1.5
    assert threads.available_cores() == 2
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {3})  # taskset -c 3
    assert threads.available_cores() == 1


def test_cgroup_v1_quota_is_read_too(tmp_path):
    quota, period = tmp_path / "quota", tmp_path / "period"
    quota.write_text("300000\n")
    period.write_text("100000\n")
    assert threads._cgroup_quota(tmp_path / "absent", (quota, period)) == 3.0
    quota.write_text("-1\n")  # unlimited
    assert threads._cgroup_quota(tmp_path / "absent", (quota, period)) is None


def test_the_override_sets_torch_threads_and_idle_threads_sleep(restore_torch_threads):
    env = {threads.ENV: "1"}
    assert threads.configure_threads(env) == 1
    assert torch.get_num_threads() == 1
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"


def test_without_override_torch_gets_half_the_available_cores(monkeypatch, restore_torch_threads):
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    assert threads.configure_threads({}) == 2
    assert torch.get_num_threads() == 2
    assert [threads.default_threads(c) for c in (1, 2, 3, 16)] == [1, 1, 1, 8]


def test_users_own_settings_stand(restore_torch_threads):
    env = {"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "ACTIVE"}
    assert threads.configure_threads(env) is None
    assert env["OMP_WAIT_POLICY"] == "ACTIVE"
    untouched = {threads.ENV: "0"}
    assert threads.configure_threads(untouched) is None
    assert "OMP_WAIT_POLICY" not in untouched


@pytest.mark.parametrize("value", ["two", "-1", "1.5"])
def test_a_bad_override_says_what_is_expected(value):
    with pytest.raises(ValueError, match="FUSIONSEG_NUM_THREADS.*thread count >= 1, or 0"):
        threads.configure_threads({threads.ENV: value})


def test_dataloader_workers_leave_the_main_process_a_core():
    assert threads.dataloader_workers(8, cores=2) == 1
    assert threads.dataloader_workers(2, cores=16) == 2
    assert threads.dataloader_workers(4, cores=1) == 0
    with pytest.raises(ValueError, match="num_workers must be >= 0"):
        threads.dataloader_workers(-1)


def test_the_command_sets_threads_before_running_a_command_but_not_for_help(monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "configure_threads", lambda: calls.append("threads"))
    monkeypatch.setattr(cli, "_tool_main", lambda name: lambda argv: calls.append(name) or 0)
    assert cli.main(["--help"]) == 0
    assert calls == []
    assert cli.main(["encoders"]) == 0
    assert calls == ["threads", "encoders"]
