"""Progress lines: a long step says how far it is, in place on a terminal, now and then in a log."""

from __future__ import annotations

import io

from convdiff.commands.run.streaming import _duration
from convdiff.core.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_the_detail_at_most_every_quiet_every_seconds() -> None:
    log = io.StringIO()
    progress = Progress(total=1, stream=log, quiet_every=0.0)
    with progress.step("running 100 images through keras -> tflite"):
        progress.update("64/100 images, 40 img/s, ETA 1 s")
    lines = log.getvalue().splitlines()
    assert (
        lines[0]
        == "[1/1] running 100 images through keras -> tflite ... 64/100 images, 40 img/s, ETA 1 s"
    )
    assert lines[1].startswith("[1/1] running 100 images through keras -> tflite ... done (")
    quiet = io.StringIO()
    progress = Progress(total=1, stream=quiet, quiet_every=3600.0)
    with progress.step("running"):
        progress.update("1/2 images")
    assert "1/2 images" not in quiet.getvalue()


def test_a_terminal_gets_the_detail_in_place() -> None:
    terminal = _Terminal()
    progress = Progress(total=2, stream=terminal)
    with progress.step("running"):
        progress.update("128/50,000 images, 41 img/s, ETA 20 min 17 s")
    assert (
        "\r\x1b[K[1/2] running ... 128/50,000 images, 41 img/s, ETA 20 min 17 s"
        in terminal.getvalue()
    )


def test_durations_read_as_people_say_them() -> None:
    assert [_duration(s) for s in (4.4, 125, 1217, 5000)] == [
        "4 s",
        "2 min 5 s",
        "20 min 17 s",
        "1 h 23 min",
    ]
