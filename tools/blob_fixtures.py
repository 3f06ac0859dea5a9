#!/usr/bin/env python3
"""Writes weight-blob fixtures with coremltools' own blob writer, for crates/orion-ane/tests/blob_fixtures.rs.

Each fixture is a MIL blob storage v2 file written by
`coremltools.libmilstoragepython._BlobStorageWriter`, plus one JSON sidecar (blob_fixtures.json) listing,
for every file, its length and, for every record, the dtype, the offset coremltools returned and the
stored values. Float values are given as bit patterns (fp16 as uint16, fp32 as uint32) so that the JSON
round trip is exact and NaN/inf survive; fp16 records converted from fp32 also list the fp32 source bits.

The fp32 -> fp16 policy applied here (NaN -> 0, clamp to +-65504, then numpy's round-to-nearest-even
`astype(float16)`) is the one ane.md §4 prescribes; numpy is an independent implementation of the rounding
that orion-ane's converter is checked against.

Usage:  pip install coremltools   (9.0 tested; works on Linux)
        python3 tools/blob_fixtures.py [output_dir]
Default output_dir: crates/orion-ane/tests/fixtures/blob (relative to the repository root).
"""

import json
import os
import sys

import numpy as np
import coremltools
from coremltools.libmilstoragepython import _BlobStorageWriter

FP16_MAX = 65504.0


def fp16_policy(values):
    """fp32 -> fp16 bit patterns: NaN -> 0, clamp to +-65504, round to nearest even."""
    x = np.asarray(values, dtype=np.float32)
    x = np.where(np.isnan(x), np.float32(0.0), x)
    x = np.clip(x, -FP16_MAX, FP16_MAX)
    return x.astype(np.float16).view(np.uint16)


def f32_bits(values):
    return np.asarray(values, dtype=np.float32).view(np.uint32)


# Edge cases for the fp16 conversion: ties to even, overflow, NaN, subnormals, signed zero.
EDGE_F32 = [
    1.0, 1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, -2.5, 0.1, 65504.0, 65519.0, 65520.0, 1.0e6, -1.0e9,
    float("inf"), float("-inf"), float("nan"), -0.0, 2.0**-24, 2.0**-25, 3 * 2.0**-25, 6.1e-5, 3.14159, -1.0e-3,
]

# Per dtype: (writer method, numpy dtype of the argument, JSON encoding of the stored values).
METHODS = {
    "fp16": ("write_fp16_data", np.uint16),
    "fp32": ("write_float_data", np.float32),
    "uint8": ("write_uint8_data", np.uint8),
    "int8": ("write_int8_data", np.int8),
    "int16": ("write_int16_data", np.int16),
    "uint16": ("write_uint16_data", np.uint16),
    "int32": ("write_int32_data", np.int32),
    "uint32": ("write_uint32_data", np.uint32),
    "int4": ("write_int4_data", np.int8),
    "uint1": ("write_uint1_data", np.uint8),
    "uint2": ("write_uint2_data", np.uint8),
    "uint3": ("write_uint3_data", np.uint8),
    "uint4": ("write_uint4_data", np.uint8),
    "uint6": ("write_uint6_data", np.uint8),
}


def record(dtype, values, source_f32=None):
    """One record to write; fp16 values are bit patterns, fp32 values are floats."""
    return {"dtype": dtype, "values": values, "source_f32": source_f32}


def fp16_from_f32(values):
    return record("fp16", fp16_policy(values), source_f32=values)


def write_file(path, records):
    writer = _BlobStorageWriter(path)
    described = []
    for rec in records:
        method, np_dtype = METHODS[rec["dtype"]]
        array = np.asarray(rec["values"], dtype=np_dtype)
        offset = getattr(writer, method)(array)
        stored = array.view(np.uint32) if rec["dtype"] == "fp32" else array
        entry = {"dtype": rec["dtype"], "offset": int(offset), "values": [int(v) for v in stored]}
        if rec["source_f32"] is not None:
            entry["source_f32_bits"] = [int(v) for v in f32_bits(rec["source_f32"])]
        described.append(entry)
    del writer  # flushes and closes the file
    return {"name": os.path.basename(path), "length": os.path.getsize(path), "records": described}


def compact_json(sidecar):
    """Indented JSON with one line per record, to keep the sidecar small and diffable."""
    lines = ["{"]
    lines.append(f' "generator": {json.dumps(sidecar["generator"])},')
    lines.append(f' "coremltools_version": {json.dumps(sidecar["coremltools_version"])},')
    lines.append(' "files": [')
    for i, entry in enumerate(sidecar["files"]):
        lines.append(f'  {{"name": {json.dumps(entry["name"])}, "length": {entry["length"]}, "records": [')
        records = [f"   {json.dumps(r)}" for r in entry["records"]]
        lines.append(",\n".join(records))
        lines.append("  ]}" + ("," if i + 1 < len(sidecar["files"]) else ""))
    lines.append(" ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def fixtures(rng):
    return {
        # One fp16 record converted from fp32 edge cases (the single-weight file Orion writes).
        "single_fp16.bin": [fp16_from_f32(EDGE_F32)],
        # The ane.md §4 example: 8 fp16 values, then 4 fp32 -> offsets 64 and 192, length 272.
        "reference_example.bin": [
            fp16_from_f32([0.5, -1.0, 2.0, 0.25, 1024.0, -0.125, 3.0, 7.5]),
            record("fp32", [1.5, -2.0, 3.25, 1.0e-7]),
        ],
        # One record of every dtype coremltools 9.0 writes, sub-byte ones with awkward lengths.
        "all_dtypes.bin": [
            fp16_from_f32(rng.standard_normal(5)),
            record("fp32", [float("nan"), float("inf"), -0.0, 123.456]),
            record("uint8", [0, 1, 127, 128, 255]),
            record("int8", [-128, -1, 0, 1, 127]),
            record("int16", [-32768, -300, 0, 300, 32767]),
            record("uint16", [0, 1, 40000, 65535]),
            record("int32", [-(2**31), -5, 0, 7, 2**31 - 1]),
            record("uint32", [0, 1, 2**31, 2**32 - 1]),
            record("int4", [-8, -1, 0, 1, 7]),
            record("uint1", [1, 0, 1, 1, 0, 0, 0, 0, 1]),
            record("uint2", [0, 1, 2, 3, 3, 2, 1]),
            record("uint3", [1, 2, 3, 7, 5]),
            record("uint4", [1, 2, 3]),
            record("uint6", [63, 2, 33]),
        ],
        # Several records whose data ends exactly on, just before and just after a 64-byte boundary,
        # an empty record, and one larger record.
        "multi_record.bin": [
            fp16_from_f32(rng.standard_normal(32)),  # 64 data bytes: next record directly after
            record("fp32", []),  # empty: its data offset is the next record's metadata offset
            record("int8", [-7]),
            fp16_from_f32(rng.standard_normal(31) * 100.0),
            record("fp32", rng.standard_normal(17).astype(np.float32)),
            record("uint16", rng.integers(0, 65536, size=100)),
            fp16_from_f32(rng.standard_normal(200)),
        ],
    }


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "crates/orion-ane/tests/fixtures/blob")
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(20240601)
    files = [write_file(os.path.join(out_dir, name), recs) for name, recs in fixtures(rng).items()]
    sidecar = {
        "generator": "tools/blob_fixtures.py",
        "coremltools_version": coremltools.__version__,
        "files": files,
    }
    with open(os.path.join(out_dir, "blob_fixtures.json"), "w") as f:
        f.write(compact_json(sidecar))
    for entry in files:
        print(f"{entry['name']}: {entry['length']} bytes, offsets {[r['offset'] for r in entry['records']]}")


if __name__ == "__main__":
    main()
