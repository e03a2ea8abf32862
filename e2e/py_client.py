#!/usr/bin/env python3
"""Check B's client: Python `requests`, instrumented by opentelemetry-instrumentation-requests,
its SDK exporting spans over OTLP/HTTP, calls the running demo once.

  py_client.py --url http://127.0.0.1:PORT/api/menu --otlp http://127.0.0.1:OTLP_PORT --out FILE

Writes FILE (JSON): the CLIENT span's trace_id/span_id as the SDK made them, the User-Agent it
sent, the response status and its `traceresponse` header, so that check.py can find both spans
in what rotel received. Resource: service.name=e2e-python-client plus OTEL_RESOURCE_ATTRIBUTES.
"""

import argparse
import json
import os
import sys

# stable HTTP semantic conventions on the Python side too (read when instrumenting)
os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")

import requests  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.instrumentation.requests import RequestsInstrumentor  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402

SERVICE = "e2e-python-client"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--otlp", required=True, help="OTLP/HTTP base URL, e.g. http://127.0.0.1:4318")
    p.add_argument("--out", required=True)
    args = p.parse_args()

    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=args.otlp.rstrip("/") + "/v1/traces", timeout=5)))
    trace.set_tracer_provider(provider)
    RequestsInstrumentor().instrument(tracer_provider=provider)

    session = requests.Session()
    resp = session.get(args.url, timeout=5)
    user_agent = resp.request.headers.get("User-Agent")
    sent_traceparent = resp.request.headers.get("traceparent")
    provider.force_flush()

    clients = [s for s in memory.get_finished_spans() if s.kind == SpanKind.CLIENT]
    if len(clients) != 1:
        print(f"py_client: expected 1 CLIENT span, the SDK made {len(clients)}", file=sys.stderr)
        return 1
    ctx = clients[0].get_span_context()
    out = {
        "service_name": SERVICE,
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "name": clients[0].name,
        "attributes": dict(clients[0].attributes or {}),
        "trace_flags": f"{int(ctx.trace_flags):02x}",
        "traceparent_sent": sent_traceparent,
        "user_agent": user_agent,
        "status": resp.status_code,
        "traceresponse": resp.headers.get("traceresponse"),
        "body": resp.text[:200],
    }
    provider.shutdown()
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2)
    print(
        f"py_client: GET {args.url} -> {resp.status_code}; CLIENT span {out['trace_id']}/{out['span_id']}; "
        f"sent traceparent {sent_traceparent}; got traceresponse {out['traceresponse']}"
    )
    want_tp = f"00-{out['trace_id']}-{out['span_id']}-{int(ctx.trace_flags):02x}"
    if sent_traceparent != want_tp:
        print(f"py_client: sent traceparent {sent_traceparent!r}, expected {want_tp!r}", file=sys.stderr)
        return 1
    return 0 if resp.status_code == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
