"""Why ``torch.load(..., weights_only=True)`` refused a file, in a few words for a one-line error."""

from __future__ import annotations

import re

# torch's wordings across versions: "Unsupported global: GLOBAL posix.system", "unsupported GLOBAL os.system"
_GLOBAL = re.compile(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)")


def load_failure_reason(err: BaseException) -> str:
    """A short reason for a failed ``torch.load``: the Python object a pickle would have built (refused by
    ``weights_only``), or the first sentence of torch's message (its first line can be a long advisory)."""
    text = str(err)
    found = _GLOBAL.search(text)
    if found:
        return (f"it is a pickle that would build the Python object {found.group(1)}, not only tensors; refused "
                "unread, as loading it could run code")
    if "Weights only load failed" in text:
        return "it is a pickle holding more than tensors and plain containers; refused unread"
    first = (text.strip().splitlines() or [type(err).__name__])[0]
    return re.split(r"(?<=[a-z])\. ", first, maxsplit=1)[0][:160]
