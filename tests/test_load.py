"""The open-loop load client, against a tiny fake vLLM on 127.0.0.1 (no vLLM needed).

The fake (``FakeVLLM``) speaks just enough of vLLM's API for the client and the live backend:
``/health``, ``/version``, ``/v1/models``, ``/metrics`` and streamed ``/v1/completions`` with
per-chunk usage, driven by a small step loop that logs vLLM's iteration-details lines. Special
``max_tokens`` values trigger faults (see ``_FAULTS``). Run as a script (``python
tests/test_load.py serve MODEL --port N ...``) it stands in for the ``vllm`` command.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.config
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# --- the fake server (stdlib only: it also runs as a stand-in `vllm` script) --------------------
ERROR_TOKENS = 13  # max_tokens=13: HTTP 400
SHORT_TOKENS = 7  # max_tokens=7: the stream ends after 5 tokens
STALL_TOKENS = 11  # max_tokens=11: one token, then nothing (a request timeout)
MERGED_TOKENS = 6  # max_tokens=6: tokens arrive two per chunk
NEVER_TOKENS = 17  # max_tokens=17: HTTP 200, then not one token (a healthy server that stalls)
REFUSED_BUDGET = 999  # the fake `vllm serve` refuses --max-num-batched-tokens 999
STALLED_BUDGET = 998  # with --max-num-batched-tokens 998 it streams nothing after the warm-up
_FAULTS = (ERROR_TOKENS, SHORT_TOKENS, STALL_TOKENS, MERGED_TOKENS, NEVER_TOKENS)
_STEP_LINE = (
    "Engine 000: Iteration(%d): %d context requests, %d context tokens, %d generation requests, "
    "%d generation tokens, iteration elapsed time: %.2f ms, CPU KV cache usage: 0.0%%"
)


class _Request:
    def __init__(self, prompt: int, max_tokens: int) -> None:
        self.prompt = prompt
        self.max_tokens = max_tokens
        self.emitted = 0
        self.events: queue.Queue[int | None] = queue.Queue()  # tokens per step; None = end


class FakeEngine:
    """Steps every ``step_s`` seconds: a new request prefills its whole prompt in one step and
    gets its first token, a running one gets one token per step (vLLM's accounting)."""

    def __init__(self, step_s: float, log: logging.Logger) -> None:
        self.step_s = step_s
        self.log = log
        self.steps = 0
        self._new: list[_Request] = []
        self._running: list[_Request] = []
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def submit(self, req: _Request) -> None:
        with self._cv:
            self._new.append(req)
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not (self._new or self._running or self._stop):
                    self._cv.wait()
                if self._stop:
                    return
                new, self._new = self._new, []
            t0 = time.monotonic()
            time.sleep(self.step_s)
            elapsed = (time.monotonic() - t0) * 1000
            running = self._running
            self.log.info(
                _STEP_LINE,
                self.steps,
                len(new),
                sum(r.prompt for r in new),
                len(running),
                len(running),
                elapsed,
            )
            self.steps += 1
            still = []
            for r in running + new:
                r.emitted += 1
                r.events.put(1)
                if r.emitted >= r.max_tokens:
                    r.events.put(None)
                else:
                    still.append(r)
            self._running = still


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _FakeHTTPServer

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _json(self, status: int, obj: object) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _unauthorized(self) -> bool:
        """vLLM's AuthenticationMiddleware: /v1/* needs the API key's bearer, if one is set."""
        fake = self.server.fake
        fake.headers.append(dict(self.headers.items()))
        if fake.api_key is None or not self.path.startswith("/v1"):
            return False
        if self.headers.get("Authorization") == f"Bearer {fake.api_key}":
            return False
        if self.command == "POST":
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._json(401, {"error": "Unauthorized"})
        return True

    def do_GET(self) -> None:
        fake = self.server.fake
        if self._unauthorized():
            return
        if self.path == "/health":
            self._json(200, {})
        elif self.path == "/version":
            self._json(200, {"version": "0.0-fake"})
        elif self.path == "/v1/models":
            self._json(200, {"data": [{"id": fake.model, "max_model_len": fake.max_model_len}]})
        elif self.path == "/metrics":
            body = b"# TYPE vllm:num_preemptions counter\nvllm:num_preemptions_total 0.0\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def do_POST(self) -> None:
        fake = self.server.fake
        if self._unauthorized():
            return
        if self.path.startswith("/reset_prefix_cache"):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not fake.dev_mode:  # vLLM serves it only with VLLM_SERVER_DEV_MODE=1
                self._json(404, {"detail": "Not Found"})
                return
            fake.resets += 1
            self._json(200, {"success": True})
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        fake.bodies.append(body)
        fake.on_request()
        prompt, max_tokens = len(body["prompt"]), int(body["max_tokens"])
        if max_tokens == ERROR_TOKENS:
            self._json(400, {"error": {"message": "fake: this request is refused"}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if max_tokens == NEVER_TOKENS or (
            fake.stream_only is not None and len(fake.bodies) > fake.stream_only
        ):
            self.wfile.flush()
            time.sleep(3600)
        req = _Request(prompt, max_tokens)
        fake.engine.submit(req)
        got = pending = 0
        while True:
            event = req.events.get()
            if event is None:
                break
            got += event
            pending += event
            if max_tokens == STALL_TOKENS and got > 1:
                time.sleep(3600)
            if max_tokens == SHORT_TOKENS and got > 5:
                got = 5
                break
            if max_tokens == MERGED_TOKENS and pending < 2 and got < max_tokens:
                continue
            usage = {"prompt_tokens": prompt, "completion_tokens": got}
            choice = {"index": 0, "text": " x" * pending, "finish_reason": None}
            if got == max_tokens:
                choice["finish_reason"] = "length"
            self._chunk(
                b"data: " + json.dumps({"choices": [choice], "usage": usage}).encode() + b"\n\n"
            )
            pending = 0
        final = {"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": got}}
        self._chunk(b"data: " + json.dumps(final).encode() + b"\n\n")
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")


class _FakeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeVLLM

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up: quiet
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class FakeVLLM:
    """A fake vLLM server: ``url`` once started; ``bodies`` holds every completion request."""

    def __init__(
        self,
        model: str = "fake-model",
        port: int = 0,
        step_s: float = 0.002,
        max_model_len: int = 1024,
        log: logging.Logger | None = None,
        api_key: str | None = None,
        dev_mode: bool = False,
    ) -> None:
        self.model = model
        self.max_model_len = max_model_len
        self.api_key = api_key
        self.dev_mode = dev_mode
        self.resets = 0
        self.stream_only: int | None = None  # stream only this many requests, then none
        self.headers: list[dict[str, str]] = []  # of every request, in order
        self.bodies: list[dict[str, object]] = []
        self.on_request: Callable[[], None] = lambda: None
        self.engine = FakeEngine(step_s, log or logging.getLogger("fake.engine"))
        self.http = _FakeHTTPServer(("127.0.0.1", port), _Handler)
        self.http.fake = self
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"

    def serve_forever(self) -> None:
        self.http.serve_forever(poll_interval=0.05)

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.engine.stop()


@contextlib.contextmanager
def fake_vllm(**kwargs: object) -> Iterator[FakeVLLM]:
    """A FakeVLLM serving from a thread of this process."""
    fake = FakeVLLM(**kwargs)  # type: ignore[arg-type]
    thread = threading.Thread(target=fake.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.close()
        thread.join()


def main(argv: list[str]) -> int:
    """``vllm serve MODEL [...] --host H --port P``, faked; FAKE_VLLM_MODE picks a behaviour:
    ``ok``, ``crash`` (exit 3 with a traceback; also for a budget of ``REFUSED_BUDGET``),
    ``hang`` (never listens; leaves a child process in the group), ``die`` (exits when the first
    completion request arrives after the warm-up), ``slow`` (a 50 ms step). A budget of
    ``STALLED_BUDGET`` stays healthy but streams nothing after the warm-up."""
    import subprocess

    if len(argv) < 2 or argv[0] != "serve":
        print(f"usage: vllm serve MODEL ..., got {argv}", file=sys.stderr)
        return 2
    model = argv[1]
    port = int(argv[argv.index("--port") + 1])
    max_len = int(argv[argv.index("--max-model-len") + 1]) if "--max-model-len" in argv else 1024
    mode = os.environ.get("FAKE_VLLM_MODE", "ok")
    budget = (
        argv[argv.index("--max-num-batched-tokens") + 1]
        if "--max-num-batched-tokens" in argv
        else ""
    )
    if budget == str(REFUSED_BUDGET):
        mode = "crash"
    config_path = os.environ.get("VLLM_LOGGING_CONFIG_PATH")
    if config_path:
        with open(config_path) as f:
            logging.config.dictConfig(json.load(f))
    log = logging.getLogger("vllm.v1.metrics.loggers")
    log.setLevel(logging.INFO)
    if not log.handlers and not config_path:
        logging.basicConfig(stream=sys.stdout, level=logging.INFO)
    print(f"fake vllm {mode}: serving {model} on port {port}", flush=True)
    for name in (
        "TMPDIR",
        "VLLM_RPC_BASE_PATH",
        "VLLM_CACHE_ROOT",
        "HF_HUB_OFFLINE",
        "VLLM_NO_USAGE_STATS",
        "VLLM_HOST_IP",
        "VLLM_CPU_KVCACHE_SPACE",
    ):
        print(f"fake vllm env {name}={os.environ.get(name)}", flush=True)
    if mode == "leak":  # a server that prints a secret of its environment, then dies
        print(f"fake vllm: using token {os.environ.get('HF_TOKEN')}", flush=True)
        print(f"ValueError: bad key {os.environ.get('VLLM_API_KEY')}", flush=True)
        return 3
    if mode == "crash":
        print('Traceback (most recent call last):\n  File "fake.py", line 1, in <module>')
        print("ValueError: fake refusal: this configuration is not supported", flush=True)
        return 3
    if mode == "hang":
        subprocess.Popen(["sleep", "3600"])  # a child in our process group, to be killed too
        time.sleep(3600)
        return 0
    fake = FakeVLLM(
        model,
        port=port,
        step_s=0.05 if mode == "slow" else 0.002,
        max_model_len=max_len,
        log=log,
        api_key=os.environ.get("VLLM_API_KEY") or None,
        dev_mode=os.environ.get("VLLM_SERVER_DEV_MODE") == "1",
    )
    if budget == str(STALLED_BUDGET):
        fake.stream_only = 1  # the warm-up
    if mode == "die":
        seen = []

        def die() -> None:
            seen.append(1)
            if len(seen) > 1:  # the first is the warm-up
                print("fake vllm: dying on purpose", flush=True)
                os._exit(5)

        fake.on_request = die
    fake.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


# --- the tests ------------------------------------------------------------------------------------
import numpy as np  # noqa: E402 - the script part above needs only the stdlib
import pytest  # noqa: E402

from tuner import BackendError, Request, TunerError, Workload  # noqa: E402
from tuner.backends.live._load import replay  # noqa: E402
from tuner.backends.live._prompts import (  # noqa: E402
    hashed_prompt,
    prompt_token_ids,
    shares_prefix,
)


def test_every_request_gets_its_tokens_with_ttft_itl_and_e2e() -> None:
    w = Workload.from_arrays([0.0, 0.0, 0.05, 0.1], [32, 8, 64, 16], [5, 1, 8, 3])
    with fake_vllm() as fake:
        result = replay(fake.url, fake.model, w)
    assert [r.ok for r in result.requests] == [True] * 4
    assert [r.output_tokens for r in result.requests] == [5, 1, 8, 3]
    assert [r.prompt_tokens for r in result.requests] == [32, 8, 64, 16]
    for r in result.requests:
        assert r.ttft > 0
        assert r.e2e >= r.ttft
        assert len(r.itl) == r.output_tokens - 1
        assert all(g >= 0 for g in r.itl)
        assert r.e2e == pytest.approx(r.ttft + sum(r.itl))
    assert result.duration == pytest.approx(result.last_token - result.first_send)
    assert not result.failed


def test_requests_are_sent_at_their_arrival_times_whatever_the_server_does() -> None:
    # Each request takes ~0.5 s (10 steps of 50 ms), far longer than the gaps: open loop means
    # the sends still follow the schedule (a closed loop would wait for each answer).
    w = Workload.from_arrays([1.0, 1.1, 1.2, 1.5], [16] * 4, [10] * 4)
    with fake_vllm(step_s=0.05) as fake:
        result = replay(fake.url, fake.model, w)
    sent = [r.sent for r in result.requests]
    # The origin is the first arrival: the schedule is 0, 0.1, 0.2, 0.5 seconds.
    assert sent == pytest.approx([0.0, 0.1, 0.2, 0.5], abs=0.08)  # closed: 0, 0.5, 1, 1.5
    assert result.time_offset == 1.0
    assert np.all(result.send_lag < 0.08)
    assert all(r.ok for r in result.requests)


def test_results_are_in_workload_order_even_when_arrivals_are_not() -> None:
    w = Workload.from_arrays([0.2, 0.0, 0.1], [8, 9, 10], [2, 3, 4])
    with fake_vllm() as fake:
        result = replay(fake.url, fake.model, w)
    assert [r.request_id for r in result.requests] == [0, 1, 2]
    assert [r.output_tokens for r in result.requests] == [2, 3, 4]
    assert [r.scheduled for r in result.requests] == pytest.approx([0.2, 0.0, 0.1])


def test_each_request_is_a_streamed_completion_of_distinct_token_ids() -> None:
    w = Workload.from_arrays([0.0, 0.0, 0.0], [20, 20, 3], [2, 2, 2])
    with fake_vllm() as fake:
        replay(fake.url, fake.model, w, extra_body={"temperature": 0})
        bodies = fake.bodies
    assert len(bodies) == 3
    for body in bodies:
        assert body["stream"] is True and body["ignore_eos"] is True
        assert body["max_tokens"] == 2 and body["temperature"] == 0
        assert body["model"] == "fake-model"
        assert body["stream_options"] == {"include_usage": True, "continuous_usage_stats": True}
    prompts = [tuple(b["prompt"]) for b in bodies]  # type: ignore[arg-type]
    assert sorted(len(p) for p in prompts) == [3, 20, 20]
    assert len({p[:3] for p in prompts}) == 3  # no shared first block: no prefix-cache hit


def test_prompts_differ_across_requests_and_salts_and_stay_in_range() -> None:
    seen = {tuple(prompt_token_ids(i, 8, salt=s)[:4]) for i in range(300) for s in range(3)}
    assert len(seen) == 900
    ids = prompt_token_ids(5, 1000, token_range=(10, 20))
    assert len(ids) == 1000 and min(ids) >= 10 and max(ids) < 20
    assert prompt_token_ids(5, 64) == prompt_token_ids(5, 64)  # deterministic
    with pytest.raises(ValueError, match="token_range"):
        prompt_token_ids(0, 4, token_range=(5, 6))


def test_tokens_that_arrive_in_one_chunk_each_count_with_a_zero_gap() -> None:
    w = Workload.from_arrays([0.0], [8], [MERGED_TOKENS])
    with fake_vllm() as fake:
        (r,) = replay(fake.url, fake.model, w).requests
    assert r.ok and r.output_tokens == MERGED_TOKENS
    assert len(r.itl) == MERGED_TOKENS - 1
    assert r.itl[0] == 0.0 and r.itl[2] == 0.0 and r.itl[1] > 0


def test_http_errors_short_streams_and_timeouts_are_failed_requests_with_nan_latency() -> None:
    w = Workload.from_arrays(
        [0.0, 0.0, 0.0, 0.0], [8, 8, 8, 8], [4, ERROR_TOKENS, SHORT_TOKENS, STALL_TOKENS]
    )
    with fake_vllm() as fake:
        t0 = time.perf_counter()
        result = replay(fake.url, fake.model, w, request_timeout=0.5)
        took = time.perf_counter() - t0
    ok, refused, short, stalled = result.requests
    assert ok.ok and ok.output_tokens == 4
    assert not refused.ok and "HTTP 400" in (refused.error or "")
    assert "refused" in (refused.error or "")
    assert not short.ok and "received 5 of 7" in (short.error or "")
    assert not stalled.ok and stalled.timed_out and "timed out after 0.5 s" in (stalled.error or "")
    for r in (refused, short, stalled):
        assert math.isnan(r.ttft) and math.isnan(r.e2e) and r.itl == []
    assert len(result.failed) == 3
    assert took < 3  # the stalled stream was abandoned at its timeout


def test_a_refused_connection_fails_every_request_without_raising() -> None:
    from tuner.backends.live._process import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    result = replay(url, "m", Workload.from_arrays([0.0, 0.01], [4, 4], [2, 2]))
    assert len(result.failed) == 2
    assert all("Connection" in (r.error or "") or "Errno" in (r.error or "") for r in result.failed)


def test_a_bad_url_is_a_backend_error() -> None:
    with pytest.raises(BackendError, match="expected http"):
        replay("ftp://127.0.0.1:1", "m", Workload.from_arrays([0.0], [4], [2]))


def test_replay_works_from_inside_a_running_event_loop() -> None:
    import asyncio

    w = Workload.from_arrays([0.0], [8], [3])

    async def inside() -> int:
        with fake_vllm() as fake:
            return replay(fake.url, fake.model, w).requests[0].output_tokens

    assert asyncio.run(inside()) == 3


# --- prompts from a trace's hash ids ------------------------------------------------------------
class _HashedRequest(Request):
    """A Request with vllm bench's chunk hashes, for tuners whose Request has none yet."""

    hash_ids: tuple[int, ...] = ()


class _HashedWorkload(Workload):
    __slots__ = ("_hash_ids", "hash_chunk_size")

    def __iter__(self) -> Iterator[Request]:
        for r, ids in zip(super().__iter__(), self._hash_ids, strict=True):
            yield _HashedRequest(**r.model_dump(), hash_ids=ids)


def hashed_workload(
    arrival: list[float],
    prompt: list[int],
    output: list[int],
    hash_ids: list[tuple[int, ...]],
    chunk: int = 16,
) -> Workload:
    """A workload whose requests carry trace hash ids (``Request.hash_ids`` where tuner has
    them, else a stand-in with the same attributes)."""
    try:
        reqs = [
            Request(arrival=a, prompt_tokens=p, output_tokens=o, hash_ids=h)  # type: ignore[call-arg]
            for a, p, o, h in zip(arrival, prompt, output, hash_ids, strict=True)
        ]
        return Workload(reqs, hash_chunk_size=chunk)  # type: ignore[call-arg]
    except (TypeError, TunerError):
        w = _HashedWorkload.__new__(_HashedWorkload)
        w._init(np.asarray(arrival, float), np.asarray(prompt), np.asarray(output))
        w._hash_ids = hash_ids
        w.hash_chunk_size = chunk
        return w


def test_requests_with_shared_hash_ids_share_exactly_that_prefix_of_token_ids() -> None:
    w = hashed_workload(
        [0.0, 0.1, 0.2], [40, 40, 20], [2, 2, 2], [(1, 2, 3), (1, 2, 9), (5,)], chunk=16
    )
    assert shares_prefix(w)
    with fake_vllm() as fake:
        result = replay(fake.url, fake.model, w)
        a, b, c = (list(body["prompt"]) for body in fake.bodies)  # type: ignore[call-overload]
    assert not result.failed
    assert a[:32] == b[:32] and a[32:] != b[32:]  # two 16-token chunks shared, the third not
    assert len(a) == len(b) == 40 and len(c) == 20  # the last chunk cut to what the prompt needs
    assert not shares_prefix(Workload.from_arrays([0.0, 0.0], [8, 8], [1, 1]))


def test_hash_id_prompts_are_the_prompt_length_whatever_the_ids_cover() -> None:
    short = hashed_prompt(3, 50, [7], chunk=16)  # one id: 16 tokens, then 34 of its own
    assert len(short) == 50 and short[:16] == hashed_prompt(4, 16, [7], chunk=16)
    assert short[16:] != hashed_prompt(4, 50, [7], chunk=16)[16:]
    assert len(hashed_prompt(0, 10, [1, 2, 3], chunk=16)) == 10
    assert hashed_prompt(0, 32, [1, 2], salt=1) != hashed_prompt(0, 32, [1, 2], salt=2)


# --- headers, lag, stalls -----------------------------------------------------------------------
def test_every_request_carries_the_given_headers_and_bearer() -> None:
    w = Workload.from_arrays([0.0, 0.0], [8, 8], [2, 2])
    with fake_vllm(api_key="k-123") as fake:
        refused = replay(fake.url, fake.model, w)
        ok = replay(
            fake.url, fake.model, w, headers={"Authorization": "Bearer k-123", "X-Team": "a"}
        )
        seen = fake.headers
    assert len(refused.failed) == 2 and "HTTP 401" in (refused.failed[0].error or "")
    assert not ok.failed
    assert all(h.get("X-Team") == "a" for h in seen[-2:])


def test_each_request_records_how_late_it_was_sent_and_the_loop_its_read_delays() -> None:
    w = Workload.from_arrays([0.0, 0.05, 0.1], [8] * 3, [3] * 3)
    with fake_vllm() as fake:
        result = replay(fake.url, fake.model, w)
    lag = result.send_lag
    assert lag.shape == (3,) and (lag >= 0).all() and (lag < 0.05).all()
    assert [r.send_lag for r in result.requests] == pytest.approx(lag.tolist())
    assert len(result.read_lag) > 10 and min(result.read_lag) >= 0  # ~every 5 ms for ~0.1 s


def test_a_server_that_sends_no_token_for_stall_timeout_is_a_stalled_load() -> None:
    w = Workload.from_arrays([0.0, 0.0, 0.0, 30.0], [8] * 4, [NEVER_TOKENS] * 3 + [2])
    with fake_vllm() as fake:
        t0 = time.perf_counter()
        result = replay(fake.url, fake.model, w, stall_timeout=0.5, request_timeout=60)
        took = time.perf_counter() - t0
    assert result.stalled == "stalled: no token for 0.5 s with 3 requests outstanding"
    assert took < 5  # neither the request timeout nor the last arrival was waited for
    assert len(result.failed) == 4 and all(r.timed_out for r in result.failed)
    assert "abandoned (stalled" in (result.requests[0].error or "")
    assert "never sent" in (result.requests[3].error or "")


def test_a_slow_but_steady_server_is_not_a_stall() -> None:
    # 10 tokens 50 ms apart: no gap reaches the 0.3 s stall timeout, though the request is 0.5 s
    w = Workload.from_arrays([0.0], [8], [10])
    with fake_vllm(step_s=0.05) as fake:
        result = replay(fake.url, fake.model, w, stall_timeout=0.3)
    assert result.stalled is None and not result.failed
