#!/usr/bin/env python3
"""The per-op check of kfleet's baseline executor against PyTorch eager on the same shapes.

One table of ops (GPT-2 small at batch 1 x 128 tokens, ResNet-50 at batch 8), three uses:
  baseline_ops.py specs DIR          write each op as an ONNX-text kernel spec for
                                     `kfleet bench baseline --backend cuda DIR/*.onnxtxt --json`
  baseline_ops.py torch [--out F] [--tf32]
                                     time the same ops in PyTorch eager on the GPU (needs torch);
                                     --tf32 lets cuDNN use TF32 in f32 convs (PyTorch's default)
  baseline_ops.py compare KFLEET.json TORCH.json
                                     print a markdown table: kfleet baseline / eager per op

Both sides are timed alike: the L2 is flushed (a write of twice its size) before every call,
inputs rotate over three sets, CUDA events around the call, median of many calls.
"""
import json
import sys

# name, ONNX-text body (with {T} for the element type), torch builder: (torch, dtype, device) ->
# (inputs factory, function). Shapes are those of GPT-2 small (1x128 tokens) and ResNet-50 (b8).
GPT2 = [
    ("matmul_128x768x3072", "(T[128,768] a, T[768,3072] b) => (T[128,3072] y) { y = MatMul(a, b) }",
     [(128, 768), (768, 3072)], lambda t: lambda a, b: a @ b),
    ("matmul_add_128x768x2304",
     "(T[1,128,768] a, T[768,2304] b, T[2304] c) => (T[1,128,2304] y) { m = MatMul(a, b)\n y = Add(m, c) }",
     [(1, 128, 768), (768, 2304), (2304,)], lambda t: lambda a, b, c: a @ b + c),
    ("matmul_lmhead_128x768x50257",
     "(T[1,128,768] a, T[768,50257] b) => (T[1,128,50257] y) { y = MatMul(a, b) }",
     [(1, 128, 768), (768, 50257)], lambda t: lambda a, b: a @ b),
    ("bmm_qk_12x128x64x128",
     "(T[1,12,128,64] q, T[1,12,64,128] k) => (T[1,12,128,128] y) { y = MatMul(q, k) }",
     [(1, 12, 128, 64), (1, 12, 64, 128)], lambda t: lambda q, k: q @ k),
    ("softmax_1x12x128x128",
     "(T[1,12,128,128] x) => (T[1,12,128,128] y) { y = Softmax <axis = -1> (x) }",
     [(1, 12, 128, 128)], lambda t: lambda x: t.softmax(x, dim=-1)),
    ("layernorm_1x128x768",
     "(T[1,128,768] x, T[768] g, T[768] b) => (T[1,128,768] y) { y = LayerNormalization <axis = -1, epsilon = 0.00001> (x, g, b) }",
     [(1, 128, 768), (768,), (768,)],
     lambda t: lambda x, g, b: t.nn.functional.layer_norm(x, (768,), g, b, 1e-5)),
    ("add_bias_1x128x3072", "(T[1,128,3072] x, T[3072] b) => (T[1,128,3072] y) { y = Add(x, b) }",
     [(1, 128, 3072), (3072,)], lambda t: lambda x, b: x + b),
    ("tanh_1x128x3072", "(T[1,128,3072] x) => (T[1,128,3072] y) { y = Tanh(x) }",
     [(1, 128, 3072)], lambda t: lambda x: t.tanh(x)),
    ("mul_1x128x3072", "(T[1,128,3072] x, T[1,128,3072] z) => (T[1,128,3072] y) { y = Mul(x, z) }",
     [(1, 128, 3072), (1, 128, 3072)], lambda t: lambda x, z: x * z),
    ("transpose_1x128x12x64",
     "(T[1,128,12,64] x) => (T[1,12,128,64] y) { y = Transpose <perm = [0, 2, 1, 3]> (x) }",
     [(1, 128, 12, 64)], lambda t: lambda x: x.permute(0, 2, 1, 3).contiguous()),
]
RESNET = [
    ("conv3x3_8x64x56x56",
     "(T[8,64,56,56] x, T[64,64,3,3] w, T[64] b) => (T[8,64,56,56] y) { y = Conv <pads = [1, 1, 1, 1]> (x, w, b) }",
     [(8, 64, 56, 56), (64, 64, 3, 3), (64,)],
     lambda t: lambda x, w, b: t.nn.functional.conv2d(x, w, b, padding=1)),
    ("conv7x7s2_8x3x224x224",
     "(T[8,3,224,224] x, T[64,3,7,7] w, T[64] b) => (T[8,64,112,112] y) { y = Conv <pads = [3, 3, 3, 3], strides = [2, 2]> (x, w, b) }",
     [(8, 3, 224, 224), (64, 3, 7, 7), (64,)],
     lambda t: lambda x, w, b: t.nn.functional.conv2d(x, w, b, stride=2, padding=3)),
    ("conv1x1_8x256x56x56",
     "(T[8,256,56,56] x, T[64,256,1,1] w, T[64] b) => (T[8,64,56,56] y) { y = Conv (x, w, b) }",
     [(8, 256, 56, 56), (64, 256, 1, 1), (64,)],
     lambda t: lambda x, w, b: t.nn.functional.conv2d(x, w, b)),
    ("maxpool_8x64x112x112",
     "(T[8,64,112,112] x) => (T[8,64,56,56] y) { y = MaxPool <kernel_shape = [3, 3], pads = [1, 1, 1, 1], strides = [2, 2]> (x) }",
     [(8, 64, 112, 112)], lambda t: lambda x: t.nn.functional.max_pool2d(x, 3, 2, 1)),
    ("relu_8x64x56x56", "(T[8,64,56,56] x) => (T[8,64,56,56] y) { y = Relu(x) }",
     [(8, 64, 56, 56)], lambda t: lambda x: t.relu(x)),
    ("gap_8x2048x7x7", "(T[8,2048,7,7] x) => (T[8,2048,1,1] y) { y = GlobalAveragePool(x) }",
     [(8, 2048, 7, 7)], lambda t: lambda x: t.nn.functional.adaptive_avg_pool2d(x, 1)),
]
OPS = [(n + "_" + d, b, s, f, d) for d in ("f32", "bf16") for (n, b, s, f) in GPT2] + \
      [(n + "_" + d, b, s, f, d) for d in ("f32",) for (n, b, s, f) in RESNET]
ONNX_TYPE = {"f32": "float", "bf16": "bfloat16"}


def write_specs(out_dir):
    import os
    os.makedirs(out_dir, exist_ok=True)
    for name, body, _, _, dtype in OPS:
        text = '<ir_version: 8, opset_import: ["" : 17]>\n' + name + " " + \
            body.replace("T[", ONNX_TYPE[dtype] + "[") + "\n"
        with open(os.path.join(out_dir, name + ".onnxtxt"), "w") as f:
            f.write(text)
    print(f"{len(OPS)} specs in {out_dir}")


def time_torch(out_path, tf32):
    import torch
    # kfleet's f32 baseline computes in full f32 (cuBLASLt without TF32, cuDNN FMA math), the
    # precision its results are checked at; PyTorch's own default lets cuDNN use TF32 in convs.
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    device = torch.device("cuda")
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    flush = torch.empty(max(2 * l2, 8 << 20), dtype=torch.uint8, device=device)
    dtypes = {"f32": torch.float32, "bf16": torch.bfloat16}
    results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
               "cudnn_tf32": tf32, "ops": {}}
    for name, _, shapes, build, dtype in OPS:
        fn = build(torch)
        sets = [[torch.randn(s, device=device, dtype=dtypes[dtype]) for s in shapes]
                for _ in range(3)]
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.no_grad():
            for i in range(5):
                fn(*sets[i % 3])
            samples = []
            for i in range(300):
                flush.fill_(i % 256)
                start.record()
                fn(*sets[i % 3])
                stop.record()
                stop.synchronize()
                samples.append(start.elapsed_time(stop) * 1000.0)
        samples.sort()
        results["ops"][name] = {"median_us": samples[len(samples) // 2], "min_us": samples[0]}
        print(f"{name:40s} {samples[len(samples) // 2]:9.2f} us", file=sys.stderr)
    text = json.dumps(results, indent=2)
    if out_path:
        with open(out_path, "w") as f:
            f.write(text)
    else:
        print(text)


def compare(kfleet_path, torch_path):
    kf = json.load(open(kfleet_path))
    th = json.load(open(torch_path))
    print(f"kfleet: {kf['device']}; PyTorch {th['torch']} eager on {th['device']}, "
          f"cuDNN TF32 {'on' if th.get('cudnn_tf32') else 'off'}\n")
    print("| op (shape, dtype) | kfleet baseline us | PyTorch eager us | ratio |")
    print("|---|---:|---:|---:|")
    worst = 0.0
    for spec in kf["specs"]:
        t = th["ops"].get(spec["name"])
        if t is None:
            continue
        ratio = spec["median_us"] / t["median_us"]
        worst = max(worst, ratio)
        print(f"| {spec['name']} | {spec['median_us']:.2f} | {t['median_us']:.2f} | {ratio:.2f} |")
    print(f"\nworst ratio {worst:.2f} (must stay under 1.3)")


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "specs":
        write_specs(sys.argv[2])
    elif len(sys.argv) >= 2 and sys.argv[1] == "torch":
        args = sys.argv[2:]
        out = args[args.index("--out") + 1] if "--out" in args else None
        time_torch(out, tf32="--tf32" in args)
    elif len(sys.argv) >= 4 and sys.argv[1] == "compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        print(__doc__)
        sys.exit(2)
