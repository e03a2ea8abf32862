"""rotel processor: writes every span, metric data point and log record that rotel receives as
one JSON line to $E2E_SINK_DIR/{spans,metrics,logs}.jsonl (errors to errors.jsonl).

Loaded by rotel's embedded Python (`--otlp-with-trace-processor`, `--otlp-with-metrics-processor`,
`--otlp-with-logs-processor`), which calls `process_spans(ResourceSpans)`,
`process_metrics(ResourceMetrics)` and `process_logs(ResourceLogs)` with the objects of its
`rotel_sdk.open_telemetry.*` modules. Standard library only; it only reads, never changes the data.

Attribute values keep their OTLP type through JSON: an int attribute is a JSON integer, a double a
JSON float, a string a JSON string, a bool true/false, an array a list, a kvlist an object.
"""

import json
import os
import time
import traceback

SINK = os.environ.get("E2E_SINK_DIR", "/tmp/e2e-sink")


def _write(name, records):
    if not records:
        return
    os.makedirs(SINK, exist_ok=True)
    data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    # one write per batch on an O_APPEND descriptor: lines never interleave
    fd = os.open(os.path.join(SINK, name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, data.encode("utf-8"))
    finally:
        os.close(fd)


def _error(where):
    _write("errors.jsonl", [{"where": where, "error": traceback.format_exc(), "t": time.time()}])


def _value(any_value):
    """An AnyValue as a plain Python value (None when unset)."""
    if any_value is None:
        return None
    v = any_value.value
    return _plain(v)


def _plain(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (bytes, bytearray)):
        return {"bytes": bytes(v).hex()}
    # ArrayValue: .values; KeyValueList: .values of KeyValue
    values = getattr(v, "values", None)
    if values is not None:
        items = list(values)
        if items and all(hasattr(i, "key") for i in items):
            return {i.key: _value(i.value) for i in items}
        return [_value(i) if hasattr(i, "value") else _plain(i) for i in items]
    return {"repr": repr(v)}


def _attrs(kvs):
    if kvs is None:
        return {}
    return {kv.key: _value(kv.value) for kv in kvs}


def _resource(res):
    return _attrs(res.attributes) if res is not None else {}


def _scope(scope):
    if scope is None:
        return {"name": "", "version": ""}
    return {"name": scope.name, "version": scope.version}


def _hex(b):
    return bytes(b).hex() if b else ""


def process_spans(resource_spans):
    try:
        resource = _resource(resource_spans.resource)
        out = []
        for ss in resource_spans.scope_spans:
            scope = _scope(ss.scope)
            for sp in ss.spans:
                status = sp.status
                out.append(
                    {
                        "resource": resource,
                        "scope": scope,
                        "name": sp.name,
                        "kind": sp.kind,
                        "trace_id": _hex(sp.trace_id),
                        "span_id": _hex(sp.span_id),
                        "parent_span_id": _hex(sp.parent_span_id),
                        "flags": sp.flags,
                        "start_time_unix_nano": sp.start_time_unix_nano,
                        "end_time_unix_nano": sp.end_time_unix_nano,
                        "attributes": _attrs(sp.attributes),
                        "status": None
                        if status is None
                        else {"code": status.code, "message": status.message},
                        "events": [{"name": e.name, "attributes": _attrs(e.attributes)} for e in sp.events],
                    }
                )
        _write("spans.jsonl", out)
    except Exception:
        _error("process_spans")


def _metric_data(metric):
    """(type name, inner object) of Metric.data (a MetricData_Histogram etc.; the variant's
    payload is its field _0)."""
    data = metric.data
    if data is None:
        return None, None
    kind = type(data).__name__.replace("MetricData_", "").lower()
    inner = getattr(data, "_0", None)
    if inner is None:
        inner = data[0]
    return kind, inner


def _number(dp):
    v = dp.value
    if v is None:
        return None
    return getattr(v, "_0", None)


def process_metrics(resource_metrics):
    try:
        resource = _resource(resource_metrics.resource)
        out = []
        for sm in resource_metrics.scope_metrics:
            scope = _scope(sm.scope)
            for m in sm.metrics:
                kind, inner = _metric_data(m)
                base = {
                    "resource": resource,
                    "scope": scope,
                    "metric": m.name,
                    "unit": m.unit,
                    "description": m.description,
                    "type": kind,
                }
                temporality = getattr(inner, "aggregation_temporality", None)
                if temporality is not None:
                    base["temporality"] = str(temporality).rsplit(".", 1)[-1]
                if hasattr(inner, "is_monotonic"):
                    base["is_monotonic"] = inner.is_monotonic
                for dp in inner.data_points if inner is not None else []:
                    rec = dict(base)
                    rec["attributes"] = _attrs(dp.attributes)
                    rec["start_time_unix_nano"] = dp.start_time_unix_nano
                    rec["time_unix_nano"] = dp.time_unix_nano
                    if kind == "histogram":
                        rec["count"] = dp.count
                        rec["sum"] = dp.sum
                        rec["min"] = dp.min
                        rec["max"] = dp.max
                        rec["explicit_bounds"] = list(dp.explicit_bounds)
                        rec["bucket_counts"] = list(dp.bucket_counts)
                    elif kind in ("sum", "gauge"):
                        rec["value"] = _number(dp)
                    else:
                        rec["count"] = getattr(dp, "count", None)
                    out.append(rec)
        _write("metrics.jsonl", out)
    except Exception:
        _error("process_metrics")


def process_logs(resource_logs):
    try:
        resource = _resource(resource_logs.resource)
        out = []
        for sl in resource_logs.scope_logs:
            scope = _scope(sl.scope)
            for lr in sl.log_records:
                out.append(
                    {
                        "resource": resource,
                        "scope": scope,
                        "body": _value(lr.body),
                        "severity_text": lr.severity_text,
                        "severity_number": lr.severity_number,
                        "trace_id": _hex(lr.trace_id),
                        "span_id": _hex(lr.span_id),
                        "flags": lr.flags,
                        "time_unix_nano": lr.time_unix_nano,
                        "observed_time_unix_nano": lr.observed_time_unix_nano,
                        "attributes": _attrs(lr.attributes),
                    }
                )
        _write("logs.jsonl", out)
    except Exception:
        _error("process_logs")
