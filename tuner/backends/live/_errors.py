"""The live tier's one map from foreign errors to the tuner error tree.

Running ``vllm serve`` and talking to it over HTTP raise the standard library's errors:
:class:`OSError` (a command that cannot run; sockets, ``ssl.SSLError``, ``urllib.error.URLError``
and ``TimeoutError`` are all OSErrors), :class:`ValueError` (``json.JSONDecodeError``, a
malformed URL or HTTP answer), ``asyncio.TimeoutError``, and the load client's aiohttp errors
(:class:`aiohttp.ClientError`: a refused connection, a server that disconnects, a cut or
malformed body). Each kind of operation catches the tuple named here for it and turns what it
caught into what is named here::

    the server command cannot run           START_ERRORS  -> ServerStartError  (start_error)
    a query the trial needs fails           ANSWER_ERRORS -> BackendError      (query_error)
    a probe (/health, /version, /metrics)   HTTP_ERRORS or ANSWER_ERRORS -> no answer
    a request's stream fails                REQUEST_ERRORS -> a failed request (request_error)
    too many failed requests                               -> TrialTimeout if any timed out,
                                                              else BackendError
                                                              (failed_requests_error)
    no token for stall_timeout seconds                     -> TrialTimeout (stall_error)

Whatever else the live tier raises is its own decision (a server that exits or is never
healthy, a wrong answer), raised where it is found, already as a tuner error. Best-effort
clean-up of local files and processes (the log tail, ``/proc``, ``/dev/shm``) swallows its
OSErrors where it runs: nothing there becomes an error of the trial.
"""

from __future__ import annotations

import asyncio

import aiohttp

from tuner.core import BackendError, ServerStartError, TrialTimeout

#: Starting a process: the command is missing, not executable, or the system refuses.
START_ERRORS: tuple[type[Exception], ...] = (OSError,)
#: One HTTP GET (:func:`~tuner.backends.live._process.http_get`): the connection failed or
#: timed out, or the URL or the answer was malformed.
HTTP_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError)
#: An HTTP GET whose JSON answer is read: also a missing key or element, or a wrong type.
ANSWER_ERRORS: tuple[type[Exception], ...] = (*HTTP_ERRORS, KeyError, IndexError, TypeError)
#: One streamed request: it timed out (``asyncio.TimeoutError``), the connection failed or
#: broke, or the stream was cut or malformed (aiohttp's errors, a JSON that does not parse).
REQUEST_ERRORS: tuple[type[Exception], ...] = (
    asyncio.TimeoutError,
    aiohttp.ClientError,
    OSError,
    ValueError,
)


def start_error(command: str, error: Exception) -> ServerStartError:
    """The error for a server ``command`` that could not be run (one of START_ERRORS)."""
    return ServerStartError(f"could not run {command!r}: {error}")


def query_error(query: str, error: Exception) -> BackendError:
    """The error for a query the trial cannot go without (one of ANSWER_ERRORS)."""
    return BackendError(f"{query} failed: {error}")


def request_error(
    error: Exception, *, request_timeout: float, received: int, requested: int
) -> tuple[str, bool]:
    """What a failed request's record says (one of REQUEST_ERRORS), and whether it timed out.

    Example:
        >>> request_error(TimeoutError(), request_timeout=1, received=2, requested=5)
        ('timed out after 1 s with 2 of 5 tokens', True)
        >>> request_error(ConnectionResetError("reset"), request_timeout=1, received=0,
        ...               requested=5)
        ('ConnectionResetError: reset', False)
    """
    if isinstance(error, asyncio.TimeoutError):
        return f"timed out after {request_timeout:g} s with {received} of {requested} tokens", True
    if isinstance(error, aiohttp.ClientConnectorError):
        return (
            f"ConnectionError: cannot connect to {error.host}:{error.port}: {error.os_error}",
            False,
        )
    return (f"{type(error).__name__}: {error}" if str(error) else type(error).__name__), False


def failed_requests_error(message: str, *, timed_out: bool) -> BackendError:
    """The error for a trial with too many failed requests: TrialTimeout if any timed out."""
    return (TrialTimeout if timed_out else BackendError)(message)


def stall_error(message: str) -> TrialTimeout:
    """The error for a server that stayed up but made no progress (a load that stalled)."""
    return TrialTimeout(message)
