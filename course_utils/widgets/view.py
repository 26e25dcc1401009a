"""What every widget shares: showing its chart, its errors and itself in a notebook."""

from __future__ import annotations

import contextlib
import html


class View:
    """Base of the widgets; a subclass sets ``view`` (the displayable box),
    ``status`` (an HTML read-out), ``_out`` (the chart's Output) and
    ``n_updates``."""

    _busy = False  # True while an update runs: callbacks it triggers are skipped

    @contextlib.contextmanager
    def _guard(self):
        """Mark the widget busy for the block (restored after, also on error)."""
        busy, self._busy = self._busy, True
        try:
            yield
        finally:
            self._busy = busy

    def _show(self, bundle: dict) -> None:
        """Count an update, clear the status and show the chart's display bundle
        (last: the chart's arrival is the update's final change on the page)."""
        self.n_updates += 1
        self.status.value = ""
        self._out.outputs = (
            {"output_type": "display_data", "data": bundle, "metadata": {}},
        )

    def _show_error(self, message: str) -> None:
        """Show `message` in red in the status read-out (callbacks never raise)."""
        self.status.value = f'<span style="color:#b2182b">{html.escape(message)}</span>'

    def _ipython_display_(self):  # pragma: no cover - only inside IPython
        from IPython.display import display

        display(self.view)
