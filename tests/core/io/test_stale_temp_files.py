"""Temporary files of saves killed mid-write are removed; files still being written are not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import BoringModule, loader, quiet_trainer

from fulmen.callbacks import ModelCheckpoint
from fulmen.io import atomic
from fulmen.io.atomic import remove_stale_temp_files

WRITER = """
import sys, time
from fulmen.io.atomic import atomic_open
with atomic_open(sys.argv[1]) as handle:
    handle.write(b"x" * 4096)
    handle.flush()
    print("writing", flush=True)
    time.sleep(120)
"""


def _start_writer(target: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    return proc


def _temps(folder: Path):
    return sorted(p.name for p in folder.glob(".*.tmp"))


def test_a_killed_writers_file_goes_a_live_writers_stays(tmp_path):
    live = _start_writer(tmp_path / "live.ckpt")
    dead = _start_writer(tmp_path / "dead.ckpt")
    try:
        dead.send_signal(signal.SIGKILL)
        dead.wait(10)
        assert len(_temps(tmp_path)) == 2  # SIGKILL skipped atomic_open's own cleanup
        removed = remove_stale_temp_files(tmp_path)
        assert [p.name.startswith(".dead.ckpt.") for p in removed] == [True]
        assert len(_temps(tmp_path)) == 1 and _temps(tmp_path)[0].startswith(".live.ckpt.")
        assert not (tmp_path / "dead.ckpt").exists()
    finally:
        live.kill()
        live.wait(10)


def test_another_hosts_file_goes_only_after_an_hour_untouched(tmp_path):
    other_host = "0badc0de"
    assert atomic._host() != other_host
    fresh = tmp_path / f".a.ckpt.{other_host}.4242.abcd1234.tmp"
    old = tmp_path / f".b.ckpt.{other_host}.4242.efgh5678.tmp"
    foreign = tmp_path / ".c.ckpt.tmp"  # not written by atomic_open: never touched
    unlike = tmp_path / ".d.ckpt.some-host.4242.abcd1234.tmp"  # host part not ours either
    folder = tmp_path / f".e.ckpt.{other_host}.4242.abcd1234.tmp"  # a directory: never removed
    for path in (fresh, old, foreign, unlike):
        path.write_bytes(b"partial")
    folder.mkdir()
    hours_ago = time.time() - atomic.STALE_AFTER_S - 60
    for path in (old, foreign, unlike, folder):
        os.utime(path, (hours_ago, hours_ago))
    assert remove_stale_temp_files(tmp_path) == [old]
    assert fresh.exists() and foreign.exists() and unlike.exists() and folder.is_dir()


def test_fit_cleans_the_checkpoint_directory(tmp_path):
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    dead = _start_writer(ckpts / "epoch=0-step=4.ckpt")
    dead.send_signal(signal.SIGKILL)
    dead.wait(10)
    assert len(_temps(ckpts)) == 1
    trainer = quiet_trainer(tmp_path, max_steps=2, callbacks=[ModelCheckpoint(dirpath=ckpts)])
    trainer.fit(BoringModule(), loader(16))
    assert _temps(ckpts) == []
    assert [p.name for p in ckpts.glob("*.ckpt")] == ["epoch=0-step=2.ckpt"]
