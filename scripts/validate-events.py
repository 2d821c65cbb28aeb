#!/usr/bin/env python3
"""Validates the event stream against the OpenAPI document, with
schemathesis's own response check (each SSE event against the stream's
schema: its name, id, and its JSON data against the event's data schema).

Reads GET /api/v1/events from the start of what the daemon keeps
(`Last-Event-ID: 0`) for SECONDS, then checks every complete event read.
Exits 1 on a violation, 2 if no event was read.

    scripts/validate-events.py OPENAPI_JSON BASE_URL TOKEN [SECONDS]
(needs schemathesis, e.g. the venv of scripts/fuzz-api.sh)
"""

import sys
import time

import requests
from schemathesis.openapi import from_path
from schemathesis.specs.openapi.checks import response_schema_conformance


def main():
    document, base, token = sys.argv[1:4]
    seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 3.0
    url = base.rstrip("/") + "/api/v1/events"
    headers = {"Token": token, "Last-Event-ID": "0"}
    r = requests.get(url, headers=headers, stream=True, timeout=(5, 1))
    body = b""
    end = time.monotonic() + seconds
    try:
        for chunk in r.iter_content(chunk_size=None):
            body += chunk
            if time.monotonic() > end:
                break
    except requests.exceptions.RequestException:
        pass  # idle past the read timeout: the kept events were all read
    r.close()
    # Only complete events (an event ends with a blank line).
    body = body[: body.rfind(b"\n\n") + 2] if b"\n\n" in body else b""
    r._content = body
    r._content_consumed = True
    events = sum(1 for line in body.split(b"\n") if line.startswith(b"event:"))
    print(f"validate-events: {events} events, {len(body)} bytes, from {url}")
    if events == 0:
        sys.exit(2)
    operation = from_path(document)["/api/v1/events"]["GET"]
    operation.Case(headers=headers).validate_response(r, checks=[response_schema_conformance])
    print("validate-events: every event conforms to the document")


if __name__ == "__main__":
    main()
