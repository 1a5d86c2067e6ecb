"""Shared pieces of the browser tests: a real ``archive serve`` with a call and a chat in it,
tokens for every role, Debian's chromium driven by playwright, sign-in, the axe-core scan and
the screenshots of docs/screenshots."""

import json
import os
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.async_api import Page

from tests.helpers import ARCHIVE_EXE

CHROMIUM = "/usr/bin/chromium"
AXE = Path(__file__).resolve().parents[2] / "web" / "node_modules" / "axe-core" / "axe.min.js"
TENANT = "camden"
NUMBER = "+442079460000"
FLAGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]
ROLES = ("complaints", "quality", "admin", "auditor", "privacy", "ingest")
# Where `make screenshots` wants the pages photographed (unset: no screenshots are taken).
SCREENSHOTS = os.environ.get("ARCHIVE_SCREENSHOTS", "")


@dataclass
class Site:
    base: str
    tokens: dict[str, str]  # a token of each role in ROLES, for TENANT
    call_id: str  # a mono call, 8 s, from NUMBER, agent a17, service council-tax
    chat_id: str  # a two-message chat with Ann Smith
    data_dir: Path

    def env(self) -> dict[str, str]:
        """The environment for running the `archive` CLI against this site's data."""
        return {**os.environ, "ARCHIVE_DATA_DIR": str(self.data_dir)}

    def push(self, method: str, path: str, body: bytes, *, headers: dict[str, str],
             role: str = "ingest") -> dict[str, Any]:
        """Call the API with a token of ``role``; the answer's JSON."""
        return push(self.base, self.tokens[role], method, path, body, headers=headers)


def make_token(data_dir: Path, role: str, tenant: str = TENANT) -> str:
    env = {**os.environ, "ARCHIVE_DATA_DIR": str(data_dir)}
    return subprocess.run([ARCHIVE_EXE, "tokens", "create", "--role", role, "--tenant", tenant],
                          env=env, check=True, capture_output=True, text=True).stdout.strip()


def push(base: str, token: str, method: str, path: str, body: bytes, *,
         headers: dict[str, str]) -> dict[str, Any]:
    request = urllib.request.Request(base + path, data=body, method=method, headers={
        "Authorization": f"Bearer {token}", **headers})
    with urllib.request.urlopen(request, timeout=30) as answer:
        result: dict[str, Any] = json.loads(answer.read())
        return result


async def sign_in(page: Page, site: Site, role: str, *, lands: str = "**/search") -> None:
    """Sign in with a token of ``role``; wait for the page a role lands on."""
    await page.goto(site.base + "/signin")
    await page.fill("#token", site.tokens[role])
    await page.click("button:has-text('Sign in')")
    await page.wait_for_url(lands)


async def serious_violations(page: Page) -> list[str]:
    """axe-core's serious and critical WCAG 2.x A/AA violations of the page."""
    await page.evaluate(AXE.read_text())
    result = await page.evaluate(
        "axe.run(document, {runOnly: {type: 'tag', values: "
        "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa']}})")
    return [f"{v['id']}: {v['help']} at {[n['html'][:120] for n in v['nodes']]}"
            for v in result["violations"] if v["impact"] in {"serious", "critical"}]


async def shoot(page: Page, name: str) -> None:
    """Photograph the page at 1280x800 as docs/screenshots/NAME.png when `make screenshots`
    asks (ARCHIVE_SCREENSHOTS is the folder); otherwise do nothing."""
    if SCREENSHOTS:
        # playwright creates the folder
        await page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"))
