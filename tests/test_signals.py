"""dnx.signals: the first SIGINT/SIGTERM raises once, later ones only hurry the cleanup (real signals)."""

import signal
import threading

import pytest

from dnx.signals import Interrupted, hurry, received, terminating


def _signal_main_thread(sig: int) -> None:
    """A real signal, delivered to the main thread, where Python runs its handlers (a process-directed one
    is taken by whichever thread does not block it: gRPC's and ONNX Runtime's threads are in this process)."""
    signal.pthread_kill(threading.main_thread().ident, sig)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_first_signal_raises_interrupted_with_its_exit_code(sig):
    with pytest.raises(Interrupted) as info:
        with terminating():
            _signal_main_thread(sig)
            for _ in range(1000):
                pass
    assert info.value.signum == sig and info.value.exit_code == 128 + sig
    assert str(info.value) == f"interrupted by {signal.Signals(sig).name}"
    assert str(info.value.with_detail("kept X")) == f"interrupted by {signal.Signals(sig).name}; kept X"


def test_second_signal_during_cleanup_does_not_cut_it_short():
    cleaned = []
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted):
        with terminating():
            try:
                _signal_main_thread(signal.SIGTERM)
                for _ in range(1000):
                    pass
            finally:
                assert received() == signal.SIGTERM and not hurry()
                _signal_main_thread(signal.SIGINT)  # a second Ctrl-C while cleaning up
                for _ in range(1000):
                    pass
                assert hurry()
                cleaned.append(True)  # reached: the second signal did not raise
    assert cleaned == [True]
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored


def test_plain_keyboard_interrupt_becomes_interrupted():
    with pytest.raises(Interrupted) as info:
        with terminating():
            raise KeyboardInterrupt
    assert info.value.signum == signal.SIGINT


def test_a_signal_whose_exception_was_swallowed_is_not_lost():
    """A library's bare ``except:`` (or a ``__del__``) eats the Interrupted: check() and the exit still raise."""
    from dnx.signals import check

    steps = []
    with pytest.raises(Interrupted) as info:
        with terminating():
            check()  # nothing arrived yet: no-op
            try:
                _signal_main_thread(signal.SIGTERM)
                for _ in range(1000):
                    pass
            except KeyboardInterrupt:
                steps.append("swallowed")
            with pytest.raises(Interrupted):
                check()
            steps.append("went on")
    assert steps == ["swallowed", "went on"] and info.value.signum == signal.SIGTERM
    # Even without a check() the block does not end as if nothing had happened.
    with pytest.raises(Interrupted):
        with terminating():
            try:
                _signal_main_thread(signal.SIGINT)
                for _ in range(1000):
                    pass
            except KeyboardInterrupt:
                pass


def test_an_inner_block_may_catch_the_signal_and_raise_it_later():
    """tune and perf catch Interrupted inside a nested terminating(), write what they kept, raise after."""
    kept = []
    with pytest.raises(Interrupted) as info:
        with terminating():
            stopped = None
            with terminating():
                try:
                    _signal_main_thread(signal.SIGTERM)
                    for _ in range(1000):
                        pass
                except Interrupted as exc:
                    stopped = exc
            kept.append("report written")  # reached: the inner block ended normally
            raise stopped.with_detail("kept X")
    assert kept == ["report written"] and str(info.value) == "interrupted by SIGTERM; kept X"
