"""schemathesis against the /openapi.json of a real ``archive serve``, with a token of each role.

Every route of ``web.routes.ENDPOINTS`` (the one table of who may do what) is one test per
role: schemathesis generates requests from the served document and each answer must not be a
5xx and must conform to the document (the status code is documented, the content type is the
documented one, the body matches the documented schema). Nothing is excluded: the ingest
routes (binary audio bodies) are fuzzed too; their random bytes meet ffmpeg and must answer a
documented 4xx.
"""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from archive.models import Role
from tests.servers import archive_serve, stop
from web.routes import ENDPOINTS

TENANT = "camden"
ARCHIVE_EXE = str(Path(sys.executable).with_name("archive"))
# Examples per operation and role: 43 routes x 6 roles x this runs in about a minute.
EXAMPLES = 15


CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@dataclass(frozen=True)
class Served:
    base: str
    schema: Any
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("schemathesis")
    proc, base, ingest_token = archive_serve(data, TENANT, stderr=data / "serve.log")
    try:
        env = {**os.environ, "ARCHIVE_DATA_DIR": str(data)}
        tokens = {Role.INGEST.value: ingest_token}
        for role in Role:
            if role is not Role.INGEST:
                tokens[role.value] = subprocess.run(
                    [ARCHIVE_EXE, "tokens", "create", "--role", role.value, "--tenant", TENANT],
                    env=env, check=True, capture_output=True, text=True).stdout.strip()
        # The served document, loaded with from_dict: from_url would drop the operation it
        # was fetched from (GET /openapi.json), and that route is fuzzed too.
        with urllib.request.urlopen(base + "/openapi.json", timeout=10) as answer:
            schema = schemathesis.openapi.from_dict(json.load(answer))
        yield Served(base, schema, tokens)
    finally:
        stop(proc)


def test_the_served_document_lists_every_route(served: Served) -> None:
    """The parametrisation below comes from the route table; the served document must hold
    exactly those operations, so no route escapes the fuzzing."""
    served_labels = {op.ok().label for op in served.schema.get_all_operations()}
    assert served_labels == {f"{e.method} {e.path}" for e in ENDPOINTS}


def _cases() -> list[Any]:
    return [pytest.param(label, role, id=f"{label}-{role}")
            for label in (f"{e.method} {e.path}" for e in ENDPOINTS)
            for role in (r.value for r in Role)]


@pytest.mark.parametrize(("label", "role"), _cases())
def test_operation_conforms(served: Served, label: str, role: str) -> None:
    operation = served.schema.find_operation_by_label(label)
    assert operation is not None, f"{label} is not in the served /openapi.json"
    headers = {"Authorization": f"Bearer {served.tokens[role]}"}

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        case.call_and_validate(base_url=served.base, headers=headers, checks=CHECKS,
                               timeout=30)

    run()


def test_a_malformed_multipart_part_header_is_a_bad_request(served: Served) -> None:
    """The smallest form of what schemathesis found: a part header with a control character."""
    boundary = "b0undary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"a\x01b\"\r\n\r\n{{}}\r\n"
            f"--{boundary}--\r\n").encode()
    request = urllib.request.Request(
        served.base + "/v1/recordings", data=body, method="POST", headers={
            "Authorization": f"Bearer {served.tokens[Role.INGEST.value]}",
            "Content-Type": f"multipart/form-data; boundary={boundary}"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 400
    assert caught.value.headers["Content-Type"].split(";")[0] == "application/problem+json"
    assert json.load(caught.value)["status"] == 400
