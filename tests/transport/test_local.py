"""The local transport's file primitives that the drivers rely on."""

from __future__ import annotations

import threading

from hpcexec.transport.local import LocalShell


def test_create_exclusive_lets_exactly_one_caller_win(tmp_path):
    t = LocalShell()
    path = str(tmp_path / "claim")
    wins: list[int] = []
    barrier = threading.Barrier(8)

    def race(i: int) -> None:
        barrier.wait()
        if t.create_exclusive(path, str(i).encode()):
            wins.append(i)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(wins) == 1
    assert t.read_bytes(path) == str(wins[0]).encode()
    assert t.create_exclusive(path) is False


def test_list_dir_of_missing_directory_is_empty(tmp_path):
    t = LocalShell()
    assert t.list_dir(str(tmp_path / "absent")) == []
    (tmp_path / "a").write_text("")
    (tmp_path / "b@x").write_text("")
    assert sorted(t.list_dir(str(tmp_path))) == ["a", "b@x"]
    both = t.list_dirs([str(tmp_path), str(tmp_path / "absent")])
    assert {p: sorted(n) for p, n in both.items()} == {
        str(tmp_path): ["a", "b@x"],
        str(tmp_path / "absent"): [],
    }
