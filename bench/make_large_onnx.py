#!/usr/bin/env python3
"""Writes a large ONNX model for `kfleet plan` timing: LAYERS blocks of MatMul + Add(bias) + Relu
with inline float32 weights of HIDDEN x HIDDEN, so the file's size approaches protobuf's 2 GiB
limit (24 layers of 4096 give 1.5 GiB). Encodes the protobuf by hand so it needs no onnx package.

usage: make_large_onnx.py OUT.onnx [LAYERS] [HIDDEN] [TOKENS]
"""
import struct
import sys


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number, payload):
    """A length-delimited field (wire type 2)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def int_field(number, value):
    return varint(number << 3) + varint(value)


def text(number, s):
    return field(number, s.encode())


def value_info(name, dims):
    shape = b"".join(field(1, int_field(1, d)) for d in dims)  # Dimension.dim_value
    tensor_type = int_field(1, 1) + field(2, shape)  # elem_type FLOAT, shape
    return text(1, name) + field(2, field(1, tensor_type))


def initializer(name, dims, raw):
    dims_bytes = b"".join(int_field(1, d) for d in dims)
    return dims_bytes + int_field(2, 1) + text(8, name) + field(9, raw)


def node(op, inputs, outputs, name):
    return (b"".join(text(1, i) for i in inputs) + b"".join(text(2, o) for o in outputs) +
            text(3, name) + text(4, op))


def main():
    out = sys.argv[1]
    layers = int(sys.argv[2]) if len(sys.argv) > 2 else 24
    hidden = int(sys.argv[3]) if len(sys.argv) > 3 else 4096
    tokens = int(sys.argv[4]) if len(sys.argv) > 4 else 128
    weight = struct.pack("<f", 0.001) * (hidden * hidden)
    bias = struct.pack("<f", 0.0) * hidden
    graph = bytearray()
    current = "x"
    for i in range(layers):
        graph += field(1, node("MatMul", [current, f"w{i}"], [f"mm{i}"], f"matmul_{i}"))
        graph += field(1, node("Add", [f"mm{i}", f"b{i}"], [f"add{i}"], f"bias_{i}"))
        graph += field(1, node("Relu", [f"add{i}"], [f"h{i}"], f"relu_{i}"))
        current = f"h{i}"
    graph += text(2, "large")
    for i in range(layers):
        graph += field(5, initializer(f"w{i}", [hidden, hidden], weight))
        graph += field(5, initializer(f"b{i}", [hidden], bias))
    graph += field(11, value_info("x", [tokens, hidden]))
    graph += field(12, value_info(current, [tokens, hidden]))
    model = int_field(1, 8) + text(2, "make_large_onnx") + field(7, bytes(graph))
    model += field(8, text(1, "") + int_field(2, 17))
    with open(out, "wb") as f:
        f.write(model)
    print(f"{out}: {len(model) / 2**30:.2f} GiB, {layers} layers of {hidden}x{hidden}")


if __name__ == "__main__":
    main()
