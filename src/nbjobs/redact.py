"""Secret values out of everything a job leaves: log lines, events, the output
notebook, results and reasons. Each occurrence becomes `[secret NAME]`.

It works on text as the kernel sent it: a value split across two stream
messages, or transformed (encoded, reversed, sliced), is not recognised.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from nbformat import NotebookNode

from nbjobs.events import Event, EventSink, StreamText

MIN_LENGTH = 1


class Redactor:
    def __init__(self, secrets: Mapping[str, str]) -> None:
        # Longest values first, so a secret that contains another is replaced whole.
        pairs = sorted(((v, n) for n, v in secrets.items() if len(v) >= MIN_LENGTH), key=lambda p: -len(p[0]))
        self._names = {value: name for value, name in pairs}
        self._pattern = re.compile("|".join(re.escape(v) for v, _ in pairs)) if pairs else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, text: str) -> str:
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(lambda m: f"[secret {self._names[m.group(0)]}]", text)

    def value(self, value: Any) -> Any:
        """Any JSON-like value with every string redacted (keys too)."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return type(value)((self.value(k), self.value(v)) for k, v in value.items())
        if isinstance(value, list | tuple):
            return type(value)(self.value(v) for v in value)
        return value

    def notebook(self, nb: NotebookNode) -> NotebookNode:
        """A redacted copy of `nb` (the original is left as the kernel produced it)."""
        if self._pattern is None:
            return nb
        return NotebookNode(self.value(copy.deepcopy(dict(nb))))

    def sink(self, target: EventSink) -> EventSink:
        """An event sink that redacts stream text before passing events on."""
        if self._pattern is None:
            return target

        def emit(event: Event) -> None:
            if isinstance(event, StreamText):
                event = StreamText(event.index, event.name, self.text(event.text))
            target(event)

        return emit
