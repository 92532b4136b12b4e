"""Claims on shared work: exactly one winner among racing processes, and when a claim stands or goes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, replace
from multiprocessing import get_context
from pathlib import Path

import pytest

from hieseg.runtime import claims

RACERS = 4
KEYS = [f"loss{i % 5}.fold{i // 5}" for i in range(40)]


def claim_all(folder: Path, keys: list[str], start: object, won: object) -> None:
    """One racer: wait for the start, then try to claim every key; report the keys it got."""
    start.wait()
    won.put([key for key in keys if isinstance(claims.acquire(folder, key), claims.Claim)])


def dead_pid() -> int:
    """The pid of a process of this host that has ended and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_claim(folder: Path, key: str, number: int, **fields: object) -> claims.Holder:
    holder = replace(claims.Holder.this_process(), **fields)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{key}.{number}.json").write_text(json.dumps(asdict(holder)))
    return holder


def test_racing_processes_claim_each_key_exactly_once(tmp_path: Path) -> None:
    context = get_context("spawn")
    start, won = context.Barrier(RACERS), context.Queue()
    racers = [context.Process(target=claim_all, args=(tmp_path, KEYS, start, won)) for _ in range(RACERS)]
    for racer in racers:
        racer.start()
    results = [won.get(timeout=120) for _ in racers]
    for racer in racers:
        racer.join(timeout=60)
    assert all(racer.exitcode == 0 for racer in racers)
    claimed = [key for result in results for key in result]
    assert sorted(claimed) == sorted(KEYS)  # every key once: none lost, none claimed twice
    pids = {json.loads((tmp_path / f"{key}.0.json").read_text())["pid"] for key in KEYS}
    assert pids <= {racer.pid for racer in racers}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_a_claim_of_a_live_process_stands_and_a_released_one_is_taken_anew(tmp_path: Path) -> None:
    mine = claims.acquire(tmp_path, "dice.fold0")
    assert isinstance(mine, claims.Claim) and mine.number == 0
    holder = claims.acquire(tmp_path, "dice.fold0")
    assert holder == mine.holder and str(holder).startswith(f"{holder.host} pid {os.getpid()} since ")
    assert isinstance(claims.acquire(tmp_path, "dice.fold1"), claims.Claim)  # other keys are free
    with mine:
        pass
    again = claims.acquire(tmp_path, "dice.fold0")
    assert isinstance(again, claims.Claim) and again.number == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dice.fold0.1.json", "dice.fold1.0.json"]


def test_a_claim_whose_process_is_gone_is_taken_over(tmp_path: Path) -> None:
    write_claim(tmp_path, "run", 3, pid=dead_pid(), process_start=None)
    claim = claims.acquire(tmp_path, "run")
    assert isinstance(claim, claims.Claim) and claim.number == 4
    assert [p.name for p in tmp_path.iterdir()] == ["run.4.json"]


def test_a_reused_pid_does_not_keep_a_claim(tmp_path: Path) -> None:
    live = os.getpid()
    write_claim(tmp_path, "run", 0, pid=live, process_start=claims.process_start(live) + 1)
    assert isinstance(claims.acquire(tmp_path, "run"), claims.Claim)


def test_an_ended_child_not_yet_collected_is_not_running() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while (claims.PROC / str(process.pid) / "stat").read_text().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not claims.is_running(process.pid, claims.process_start(process.pid))
    process.wait()
    assert claims.is_running(os.getpid(), claims.process_start(os.getpid()))


def test_a_claim_from_another_host_stands_unless_taken_over_by_number(tmp_path: Path) -> None:
    remote = write_claim(tmp_path, "run", 2, host="elsewhere.example", pid=dead_pid())
    assert claims.acquire(tmp_path, "run") == remote
    assert claims.latest_numbers(tmp_path, ["run", "never"]) == {"run": 2}
    assert claims.acquire(tmp_path, "run", takeover=1) == remote  # an older number takes nothing over
    claim = claims.acquire(tmp_path, "run", takeover=2)
    assert isinstance(claim, claims.Claim) and claim.number == 3


def test_releasing_a_claim_taken_over_meanwhile_leaves_the_new_one(tmp_path: Path) -> None:
    old = claims.acquire(tmp_path, "run")
    assert isinstance(old, claims.Claim)
    new = claims.acquire(tmp_path, "run", takeover=old.number)
    assert isinstance(new, claims.Claim)
    old.release()
    assert [p.name for p in tmp_path.iterdir()] == ["run.1.json"]
    assert claims.latest_claim(tmp_path, "run") == (1, new.holder)


def test_a_damaged_claim_is_named(tmp_path: Path) -> None:
    (tmp_path / "run.0.json").write_text('{"host": "vm"')
    with pytest.raises(claims.OutputError, match=r"run\.0\.json: not a claim .*remove it if no process"):
        claims.acquire(tmp_path, "run")


def test_create_new_creates_once_among_racing_threads(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "study.json"
    start = threading.Barrier(8)
    created: list[str] = []

    def race(text: str) -> None:
        start.wait()
        if claims.create_new(path, text):
            created.append(text)

    threads = [threading.Thread(target=race, args=(f"writer {i}\n",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(created) == 1 and path.read_text() == created[0]
    assert not claims.create_new(path, "late\n") and path.read_text() == created[0]
    assert [p.name for p in path.parent.iterdir()] == ["study.json"]


def test_create_new_in_an_unwritable_place_is_an_output_error(tmp_path: Path) -> None:
    from conftest import unwritable_folder

    with pytest.raises(claims.OutputError, match="cannot be created"):
        claims.create_new(unwritable_folder(tmp_path) / "claim.json", "{}")
