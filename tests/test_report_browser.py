"""report.html as a browser renders it: headless Chromium (Debian's ``chromium``) opens the
report of a real study (examples/chat.yaml on the simulator) and dumps the DOM it built; the
test reads that DOM (the standard library's html.parser) -- title, headline, the winner against
vLLM's defaults, the trial table with its units, every image resolving. No screenshot.

Skipped when Chromium is absent, unless ``TUNER_REQUIRE_BROWSER=1`` (set by .ci/run): then
that is a failure."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from tuner.cli import main

REQUIRED = os.environ.get("TUNER_REQUIRE_BROWSER", "0") == "1"
CHAT = Path(__file__).parent.parent / "examples" / "chat.yaml"
TRIALS = 12
#: The flags that keep Chromium off the network and out of the user's profile.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        why = "Chromium is not installed (apt-get install chromium)"
        if REQUIRED:
            pytest.fail(f"TUNER_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    return found


@dataclass
class Node:
    tag: str
    attrs: dict[str, str | None]
    children: list[Node | str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The text as a reader copies it (no-break spaces as spaces)."""
        out = "".join(c if isinstance(c, str) else c.text for c in self.children)
        return out.replace("\xa0", " ")

    def find(self, tag: str) -> list[Node]:
        out = [self] if self.tag == tag else []
        for c in self.children:
            if isinstance(c, Node):
                out += c.find(tag)
        return out


class DOM(HTMLParser):
    """The rendered DOM as a tree of :class:`Node`."""

    VOID = frozenset({"meta", "img", "br", "hr", "link", "input", "wbr"})

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def table_after(body: Node, heading: str) -> tuple[list[str], list[list[str]]]:
    """The first table after the heading whose text is ``heading``: headers and cell texts."""
    seen = False
    for node in body.children:
        if not isinstance(node, Node):
            continue
        if node.tag in ("h2", "h3") and node.text.strip() == heading:
            seen = True
        elif seen and node.tag == "table":
            head = [th.text.strip() for th in node.find("th")]
            rows = [[td.text.strip() for td in tr.find("td")] for tr in node.find("tr")]
            return head, [r for r in rows if r]
    raise AssertionError(f"no table after the heading {heading!r}")


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Node, Path]:
    browser = chromium()
    folder = tmp_path_factory.mktemp("browser")
    spec = yaml.safe_load(CHAT.read_text())
    spec["output"] = str(folder / "out")
    spec["workload"]["poisson"]["requests"] = 600  # a smaller run of the same study: fast
    spec["search"]["tpe"]["n_trials"] = TRIALS
    path = folder / "chat.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    assert main(["run", str(path)]) == 0
    page = folder / "out" / "report.html"
    with tempfile.TemporaryDirectory(prefix="tuner-chromium-") as profile:
        done = subprocess.run(
            [browser, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "<html" in done.stdout, "Chromium dumped no DOM"
    return DOM(done.stdout).root, folder / "out"


def test_the_rendered_report_has_its_title_and_headline(rendered: tuple[Node, Path]) -> None:
    dom, out = rendered
    assert [t.text for t in dom.find("title")] == ["tuner: chat"]
    assert [h.text for h in dom.find("h1")] == ["Tuning report: chat"]
    best = json.loads((out / "best.json").read_text())
    knobs = ", ".join(f"{k} {best['config'][k]}" for k in best["tuned_knobs"])
    headline = f"{knobs}: capacity {best['values']['capacity']:,.4g} req/s"
    strong = [p.text for p in dom.find("p") if p.attrs.get("class") == "strong"]
    assert headline in strong
    body = dom.find("body")[0].text
    assert "ServingConfig(" not in body and "None" not in body.split("Study file")[0]


def test_the_rendered_report_sets_the_winner_beside_vllm_defaults(
    rendered: tuple[Node, Path],
) -> None:
    dom, out = rendered
    body = dom.find("body")[0]
    head, rows = table_after(body, "The winner against vLLM's defaults")
    assert head == ["SLO", "configuration", "p50", "p90", "p99", "max", "SLO figure", "holds"]
    assert [r[:2] for r in rows] == [
        ["ttft.p99 <= 1s", "winner"],
        ["", "vLLM's defaults"],
        ["itl.p99 <= 40ms", "winner"],
        ["", "vLLM's defaults"],
    ]
    for row in rows:
        assert all(re.fullmatch(r"[\d.,]+ (ms|s)", c) for c in row[2:7]), row
        assert row[7] in ("yes", "no")
    # the same numbers as report.md's table
    md = (out / "report.md").read_text().split("## The winner against vLLM's defaults")[1]
    md_rows = [line for line in md.split("\n## ")[0].splitlines() if line.startswith("| ")]
    for row, line in zip(rows, md_rows[1:], strict=True):  # after the header row
        cells = [c.strip().replace("**", "") for c in line.strip("|").split("|")]
        assert cells == row


def test_the_rendered_trial_table_lists_every_trial_with_units(
    rendered: tuple[Node, Path],
) -> None:
    dom, out = rendered
    head, rows = table_after(dom.find("body")[0], "Trials")
    assert head[0] == "#" and head[-1] == "feasible"
    assert {"capacity (req/s)", "ttft.p99 (s)", "itl.p99 (s)"} <= set(head)
    trials = (out / "trials.jsonl").read_text().splitlines()[1:]
    assert len(rows) == len(trials) == TRIALS
    assert sum(r[0].endswith("(chosen)") for r in rows) == 1
    for row in rows:
        assert len(row) == len(head)
        assert re.fullmatch(r"\d+( \(chosen\))?", row[0])
        assert row[-1] == "yes" or row[-1].startswith("no (")


def test_every_image_in_the_rendered_report_resolves(rendered: tuple[Node, Path]) -> None:
    dom, out = rendered
    images = dom.find("img")
    md = (out / "report.md").read_text()
    assert len(images) == md.count("![") >= 3
    for img in images:
        src = img.attrs.get("src") or ""
        assert img.attrs.get("alt"), "an image without alt text"
        if src.startswith("data:"):
            kind, _, data = src.partition(",")
            assert kind == "data:image/png;base64"
            w, h = png_size(base64.b64decode(data, validate=True))
        else:
            w, h = png_size((out / src).read_bytes())
        assert w > 100 and h > 100
