#!/usr/bin/env python3
"""Check B's gRPC client: Python `grpcio`, instrumented by opentelemetry-instrumentation-grpc,
its SDK exporting spans over OTLP/HTTP, calls the running demo's `pizzeria.Oven/Bake` once.

  py_grpc_client.py --target 127.0.0.1:PORT --otlp http://127.0.0.1:OTLP_PORT --out FILE

No generated code: the request is protobuf written by hand (`BakeRequest { pizza = 1: string }`).
Writes FILE (JSON): the CLIENT span's trace_id/span_id as the SDK made them, the reply's bytes
and the `traceresponse` metadata, so that check.py can find both spans in what rotel received.
Resource: service.name=e2e-python-grpc-client plus OTEL_RESOURCE_ATTRIBUTES.
"""

import argparse
import json
import sys

import grpc  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: E402
from opentelemetry.instrumentation.grpc import GrpcInstrumentorClient  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402

SERVICE = "e2e-python-grpc-client"
METHOD = "/pizzeria.Oven/Bake"


def bake_request(pizza):
    """`BakeRequest { pizza }` as protobuf: field 1, wire type 2 (length-delimited)."""
    b = pizza.encode()
    assert len(b) < 128
    return bytes([0x0A, len(b)]) + b


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True, help="HOST:PORT of the demo")
    p.add_argument("--otlp", required=True, help="OTLP/HTTP base URL, e.g. http://127.0.0.1:4318")
    p.add_argument("--out", required=True)
    args = p.parse_args()

    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=args.otlp.rstrip("/") + "/v1/traces", timeout=5)))
    trace.set_tracer_provider(provider)
    GrpcInstrumentorClient().instrument(tracer_provider=provider)

    with grpc.insecure_channel(args.target) as channel:
        bake = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
        reply, call = bake.with_call(bake_request("marinara"), timeout=10)
        trailing = dict(call.trailing_metadata() or ())
        initial = dict(call.initial_metadata() or ())
    provider.force_flush()

    clients = [s for s in memory.get_finished_spans() if s.kind == SpanKind.CLIENT]
    if len(clients) != 1:
        print(f"py_grpc_client: expected 1 CLIENT span, the SDK made {len(clients)}", file=sys.stderr)
        return 1
    ctx = clients[0].get_span_context()
    out = {
        "service_name": SERVICE,
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "name": clients[0].name,
        "attributes": {k: v for k, v in (clients[0].attributes or {}).items()},
        "trace_flags": f"{int(ctx.trace_flags):02x}",
        "reply_hex": reply.hex(),
        "traceresponse": initial.get("traceresponse"),
        "grpc_status": trailing.get("grpc-status"),
    }
    provider.shutdown()
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2)
    print(
        f"py_grpc_client: {METHOD} -> reply {out['reply_hex']}; CLIENT span {out['trace_id']}/{out['span_id']}; "
        f"traceresponse {out['traceresponse']}"
    )
    # BakeReply { minutes = 7 }: field 1 varint
    return 0 if reply == bytes([0x08, 0x07]) else 1


if __name__ == "__main__":
    sys.exit(main())
