"""Secrets never written: what looks like a secret, and the text tuner writes with it redacted.

A name looks secret when it contains one of :data:`SECRET_WORDS` (``HF_TOKEN``,
``VLLM_API_KEY``, ``AWS_SECRET_ACCESS_KEY``, ``--api-key``, an ``Authorization`` header). Its
value is shown as ``<redacted>`` wherever tuner writes it (the trial log's header, ``describe()``,
study reports, failure messages); and a :class:`Scrubber` replaces every known secret value
found in text read back from a server's log (the log tail and the root cause a failed trial
carries into ``trials.jsonl``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

#: What marks a name's value as secret. The name is split into words at ``_``, ``-`` and ``.``;
#: its last word decides (``HF_TOKEN``, ``VLLM_API_KEY``, ``--api-key``, ``Authorization``,
#: ``GOOGLE_APPLICATION_CREDENTIALS``), being one of SECRET_WORDS, starting with one of
#: ``_STARTS`` or ending with one of ``_ENDS`` (``APIKEY``); a word of ``_ANYWHERE`` anywhere
#: also does (``CLIENT_SECRET_ID``). So ``--long-prefill-token-threshold``,
#: ``--max-num-batched-tokens``, ``--tokenizer`` and ``HF_TOKEN_PATH`` are not secret.
SECRET_WORDS = ("TOKEN", "KEY", "SECRET", "PASSWORD", "PASSWD", "AUTH", "CREDENTIAL", "COOKIE")
_STARTS = ("AUTH", "CREDENTIAL", "SECRET", "PASSWORD")
_ENDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD")
_ANYWHERE = ("SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "CREDENTIALS")
REDACTED = "<redacted>"
#: Shorter values are redacted where shown by name, but not searched for in free text (a
#: secret of one or two characters would blank out every such character of a log).
_MIN_SCRUB = 4
_WORD = re.compile(r"[^A-Za-z0-9]+")


def is_secret_name(name: str) -> bool:
    """Whether a variable, flag or header name marks its value as secret.

    Example:
        >>> [is_secret_name(n) for n in ("HF_TOKEN", "--api-key", "Authorization", "HF_HOME")]
        [True, True, True, False]
        >>> [is_secret_name(n) for n in ("--long-prefill-token-threshold", "--tokenizer")]
        [False, False]
    """
    words = [w for w in _WORD.split(name.upper()) if w]
    if not words:
        return False
    last = words[-1]
    if last in SECRET_WORDS or last.startswith(_STARTS) or last.endswith(_ENDS):
        return True
    return any(w in _ANYWHERE for w in words)


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with every secret-looking value replaced by ``<redacted>``.

    Example:
        >>> redact_env({"HF_TOKEN": "hf_abc", "HF_HOME": "/data"})
        {'HF_TOKEN': '<redacted>', 'HF_HOME': '/data'}
    """
    return {k: REDACTED if is_secret_name(k) and v else v for k, v in env.items()}


def redact_args(args: Sequence[str]) -> list[str]:
    """A command line with the value of every secret-looking flag redacted (both
    ``--api-key VALUE`` and ``--api-key=VALUE``).

    Example:
        >>> redact_args(["serve", "m", "--api-key", "k1", "--hf-token=t", "--port", "1"])
        ['serve', 'm', '--api-key', '<redacted>', '--hf-token=<redacted>', '--port', '1']
    """
    out: list[str] = []
    hide_next = False
    for a in args:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        name, sep, _ = a.partition("=")
        if a.startswith("-") and is_secret_name(name):
            if sep:
                out.append(f"{name}={REDACTED}")
                continue
            hide_next = True
        out.append(a)
    return out


def secret_values(env: Mapping[str, str], args: Sequence[str] = (), *more: str | None) -> set[str]:
    """The values of ``env``'s secret-looking variables, of ``args``' secret-looking flags, and
    ``more``: what a :class:`Scrubber` removes."""
    found = {v for k, v in env.items() if is_secret_name(k) and v}
    shown = redact_args(args)
    found |= {
        a.partition("=")[2] if "=" in a and a.startswith("-") else a
        for a, s in zip(args, shown, strict=True)
        if s != a
    }
    found |= {m for m in more if m}
    return found


class Scrubber:
    """Replaces known secret values in text with ``<redacted>`` (longest first).

    Example:
        >>> Scrubber({"hf_s3cr3t"}).scrub("token=hf_s3cr3t rest")
        'token=<redacted> rest'
    """

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.values = sorted({v for v in values if len(v) >= _MIN_SCRUB}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        """``text`` without any known secret value."""
        for v in self.values:
            if v in text:
                text = text.replace(v, REDACTED)
        return text

    def lines(self, lines: Iterable[str]) -> list[str]:
        """Every line scrubbed."""
        return [self.scrub(line) for line in lines]
