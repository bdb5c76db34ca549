#!/usr/bin/env python3
"""Generate the golden fixtures of the schemas package with fastavro.

The Go tests (schemas/golden_test.go) decode and extract these bytes, encoded
by an Avro implementation other than goavro, in all three framings. They need
no Python: the output, golden.json, is committed.

Rerun after changing schemas/avro/user_event.avsc or the cases below:

    python3 -m pip install 'fastavro==1.13.1'
    python3 schemas/testdata/golden/gen.py      # from the repository root

golden.json holds, per writer schema, its text, the registry id the tests
serve it under and fastavro's CRC-64-AVRO fingerprint of its Parsing
Canonical Form; and per case, the Avro binary body (hex), the same body in
the Confluent and single-object framings (built here, independently of the Go
helpers), the expected country and user id, and the expected plain JSON of
the whole record.
"""
import datetime
import io
import json
import os
import uuid

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

HERE = os.path.dirname(os.path.abspath(__file__))
CANONICAL = os.path.join(HERE, "..", "..", "avro", "user_event.avsc")

with open(CANONICAL) as f:
    V3 = f.read()

# An older writer: fewer fields, a non-null country, a smaller enum.
V1 = json.dumps({
    "type": "record", "name": "UserEvent", "namespace": "io.residency.events",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "user_id", "type": "string"},
        {"name": "occurred_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "event_type", "type": {"type": "enum", "name": "EventType",
                                        "symbols": ["VIDEO_VIEW", "VIDEO_LIKE", "OTHER"]}},
        {"name": "country", "type": "string"},
    ],
})

# A newer writer: new fields before the country, a nested array of records.
V4 = json.dumps({
    "type": "record", "name": "UserEvent", "namespace": "io.residency.events",
    "fields": [
        {"name": "event_id", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "user_id", "type": "string"},
        {"name": "occurred_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "experiments", "default": [], "type": {"type": "array", "items": {
            "type": "record", "name": "Experiment", "fields": [
                {"name": "id", "type": "int"},
                {"name": "arm", "type": ["null", "string"], "default": None},
                {"name": "weight", "type": "double"}]}}},
        {"name": "consent", "type": {"type": "map", "values": "boolean"}, "default": {}},
        {"name": "country", "type": ["null", "string"], "default": None},
        {"name": "referrer", "type": ["null", "string"], "default": None},
    ],
})

SCHEMAS = {"v1": (11, V1), "v3": (13, V3), "v4": (14, V4)}

T0 = datetime.datetime(2026, 11, 22, 9, 30, 0, 123000, tzinfo=datetime.timezone.utc)


def v3_event(i, country, **over):
    ev = {
        "event_id": str(uuid.UUID(int=0x6F1C2A4E00004000800000000000 + i)),
        "user_id": f"u-{1000 + i}",
        "occurred_at": T0 + datetime.timedelta(seconds=i),
        "event_type": "VIDEO_VIEW",
        "session_id": f"s-{i}",
        "device": {"device_id": "d-8c1f", "os": "IOS", "os_version": "18.1", "model": None,
                   "app_version": "34.1.2", "screen_width": 1179, "screen_height": 2556},
        "network": "CELLULAR",
        "locale": "de-DE", "timezone": "Europe/Berlin",
        "video_id": "v-7301", "creator_id": None,
        "watch_time_ms": 15300, "video_duration_ms": -1, "position_ms": None,
        "muted": True, "geo_lat": 52.5, "geo_lon": 13.375,
        "country": country,
        "tags": ["fyp", "küche", "日本"],
        "properties": {"source": "for_you", "ab": ""},
        "client_ip_hash": bytes(range(32)),
        "schema_version": 3,
    }
    ev.update(over)
    return ev


CASES = [
    ("v3-us", "v3", v3_event(1, "US")),
    ("v3-null-country", "v3", v3_event(2, None)),
    ("v3-empty-country", "v3", v3_event(3, "")),
    ("v3-sparse", "v3", v3_event(4, "IN", session_id=None, device={
        "device_id": "", "os": "WEB", "os_version": None, "model": None, "app_version": "1",
        "screen_width": None, "screen_height": None}, tags=[], properties={},
        client_ip_hash=None, locale=None, timezone=None, video_id=None, watch_time_ms=None,
        video_duration_ms=None, geo_lat=None, geo_lon=None, event_type="PURCHASE")),
    ("v3-big-numbers", "v3", v3_event(5, "BR", watch_time_ms=2**53, video_duration_ms=-(2**53),
                                      schema_version=-2**31, properties={f"k{j}": "v" * j for j in range(40)},
                                      user_id="ユーザー-😀")),
    ("v1-de", "v1", {"event_id": "e-1", "user_id": "u-1", "occurred_at": T0,
                     "event_type": "VIDEO_LIKE", "country": "DE"}),
    ("v4-gb", "v4", {"event_id": str(uuid.UUID(int=7)), "user_id": "u-4", "occurred_at": T0,
                     "experiments": [{"id": 1, "arm": "b", "weight": 0.25},
                                     {"id": -3, "arm": None, "weight": 1.5}],
                     "consent": {"ads": False, "analytics": True},
                     "country": "GB", "referrer": "https://example.com/"}),
    ("v4-null", "v4", {"event_id": str(uuid.UUID(int=8)), "user_id": "u-5", "occurred_at": T0,
                       "experiments": [], "consent": {}, "country": None, "referrer": None}),
]


def plain(v):
    """The record as plain JSON, the way Extractor.DecodeJSON renders it."""
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    if isinstance(v, datetime.datetime):
        return int(v.timestamp() * 1000 + 0.5) if v.tzinfo else None
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, bytes):
        return v.decode("latin-1")
    return v


def main():
    parsed = {k: parse_schema(json.loads(s)) for k, (_, s) in SCHEMAS.items()}
    schemas = {}
    for k, (rid, text) in SCHEMAS.items():
        # fastavro returns the fingerprint as hex of its little-endian
        # bytes, the order single-object encoding writes them in.
        le = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed[k]), "CRC-64-AVRO"))
        schemas[k] = {"registry_id": rid, "fingerprint": "%016x" % int.from_bytes(le, "little"),
                      "fingerprint_le": le.hex(), "schema": text}
    cases = []
    for name, k, rec in CASES:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed[k], rec)
        body = buf.getvalue()
        # Read it back with fastavro: the expected values come from a decode,
        # not from the input.
        back = fastavro.schemaless_reader(io.BytesIO(body), parsed[k])
        rid = SCHEMAS[k][0]
        fp = bytes.fromhex(schemas[k]["fingerprint_le"])
        cases.append({
            "name": name,
            "writer": k,
            "body": body.hex(),
            "confluent": (b"\x00" + rid.to_bytes(4, "big") + body).hex(),
            "single_object": (b"\xc3\x01" + fp + body).hex(),
            "country": back.get("country"),
            "user_id": back["user_id"],
            "json": plain(back),
        })
    out = {"generator": f"fastavro {fastavro.__version__}", "schemas": schemas, "cases": cases}
    with open(os.path.join(HERE, "golden.json"), "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
