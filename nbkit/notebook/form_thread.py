"""The prompt form's worker thread: a run (or an upscale) goes on in a thread so that Stop can be clicked;
Generate stays disabled until that thread has done its last action. On Colab the click that started it
waits for it (`colab.widget_updates_need_an_open_request` says why), and an interrupt there stops it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from nbkit.notebook import colab


class FormThread:
    """`GenerateForm`'s thread (one of its parts): start, stop, wait, and the run's last action."""

    def _init_thread(self) -> None:
        self._lock, self._stopping = threading.RLock(), threading.Event()    # R: widget observers call back
        self._thread, self._active = None, False
        self.keep_click_open = colab.widget_updates_need_an_open_request()     # see _begin
        self._ended = threading.Event()     # set by the run's last action (an interrupted join breaks)

    @property
    def running(self) -> bool:
        """True from Generate until the run's thread has done its last action."""
        return self._active

    def _begin(self, edit: tuple[str, Any] | None, target: Callable[[], None] | None = None) -> None:
        with self._lock:
            if self._active:
                return
            self._edit = edit
            if self._thread is not None:
                self._thread.join()         # it has done its last action: it ends at once
            self._active = True
            self.generate_button.disabled, self.stop_button.disabled = True, False
            self._stopping.clear()
            self._ended.clear()
            self._thread = threading.Thread(target=target or self._run, daemon=True)
            self._thread.start()
        if self.keep_click_open:       # Colab: the run's widget updates reach the page only while the click
            self._wait_interruptibly()  # that started it is being handled (colab.py says why)

    def _wait_interruptibly(self) -> None:
        """Waits for the run's thread; an interrupt (Colab's stop button, as the form's Stop click waits
        behind this one) stops the run after its current step, keeping what is finished, as Stop does."""
        while True:
            try:
                self._ended.wait()
                return
            except KeyboardInterrupt:
                self.stop()

    def stop(self, _button=None) -> None:
        """Ends the run after the current step; finished images are kept (and saved). Idle: does nothing."""
        with self._lock:
            if not self._active or self._stopping.is_set():
                return
            self._stopping.set()
            self._say("Stopping after the current step…")

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _finish(self, status: str, keep: bool = False) -> None:
        """The thread's last action: drop the slots that got no finished image, say how the run ended
        (after any Stop's message), then free the buttons. `keep`: nothing ran (a wrong field), what is
        on show stays as it is."""
        with self._lock:
            self._active = False            # first: a Stop from here on finds nothing to stop
            self._say(status)
            if not keep:
                self._keep_finished_cells()
                self._show_plain(self._results_summary() if self._finished else "")
            self.generate_button.disabled, self.stop_button.disabled = False, True
            self.seamless_button.disabled = len(self._finished) < 2
            self._ended.set()
