import io

from SemSegLib.log_progress import LogProgress, progress_bar


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_log_gets_a_line_at_the_start_then_at_most_one_every_interval_and_the_last():
    out, clock = io.StringIO(), Clock()
    with LogProgress(180, "s", "train", out, every=30, clock=clock) as bar:
        for now, done in [(0, 0), (10, 10), (29, 29), (31, 31), (45, 45), (62, 62), (180, 180)]:
            clock.now = 100 + now
            bar.n = done
            bar.set_postfix(it=done * 4, loss="0.1000")
        bar.write("fitting the random forest")
        clock.now = 285
    assert out.getvalue().splitlines() == [
        "train: 0/180 s (0%), 0 s, it=0, loss=0.1000",
        "train: 31/180 s (17%), 31 s, it=124, loss=0.1000",
        "train: 62/180 s (34%), 62 s, it=248, loss=0.1000",
        "train: 180/180 s (100%), 180 s, it=720, loss=0.1000",
        "fitting the random forest",
        "train: 180/180 s (100%), 185 s, it=720, loss=0.1000",  # closed: the last state, with its time
    ]


def test_closing_does_not_repeat_the_line_just_logged():
    out, clock = io.StringIO(), Clock()
    with LogProgress(2, "img", "predict", out, every=30, clock=clock) as bar:
        bar.update()
        clock.now += 40
        bar.update()
    assert out.getvalue().splitlines() == ["predict: 1/2 img (50%), 0 s", "predict: 2/2 img (100%), 40 s"]


def test_a_terminal_gets_tqdm_s_bar_and_a_file_the_lines():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    from tqdm import tqdm

    bar = progress_bar(3, "img", "predict", Terminal())
    assert isinstance(bar, tqdm)
    bar.close()
    assert isinstance(progress_bar(3, "img", "predict", io.StringIO()), LogProgress)
