"""Text in and out of the server: the chat template and the incremental detokenizer.

Chat template. The tiny models are code models (trained on Python source), with no chat
tokens, so a conversation is rendered as a Python comment block the model continues with code:
every message but the assistant's becomes ``# <role>: <line>`` lines, an assistant message is
emitted as it is (it is the code so far), and the prompt ends with a newline so the reply
starts on a fresh line::

    # system: You write short functions.
    # user: add two numbers
    <the reply continues here>

BOS is prepended by the server to every prompt, chat or not, as in training.

Detokenizing a stream. A byte-level BPE token can end in the middle of a UTF-8 character, so
the text of a token alone is not always printable. :class:`TextStream` decodes the whole
output so far after each emission and sends only what is new, holding it back while it ends
in U+FFFD (an incomplete character); the last emission flushes whatever is left.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

REPLACEMENT = "\ufffd"


class Decodes(Protocol):
    def decode(self, ids: Sequence[int]) -> str: ...


def render_chat(messages: Sequence[tuple[str, str]]) -> str:
    """The prompt text of ``(role, content)`` messages (module docstring)."""
    out: list[str] = []
    for role, content in messages:
        if role == "assistant":
            out.append(content if content.endswith("\n") else content + "\n")
        else:
            out.extend(
                f"# {role}: {line}".rstrip() + "\n" for line in (content.splitlines() or [""])
            )
    return "".join(out)


class TextStream:
    """New text per emission of one request's output ids (module docstring)."""

    def __init__(self, tokenizer: Decodes) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""

    def push(self, ids: Sequence[int], last: bool = False) -> str:
        """Append ``ids``; the text that is new and complete (everything left when ``last``)."""
        self.ids.extend(ids)
        full = self.tokenizer.decode(self.ids)
        if full.endswith(REPLACEMENT) and not last:
            return ""
        new = full[len(self.text) :] if full.startswith(self.text) else ""
        self.text = full if full.startswith(self.text) else self.text
        return new
