#!/usr/bin/env python3
"""PyTorch eager and torch.compile end to end on the models kfleet searches, on this GPU.

  torch_models.py [--out FILE]

GPT-2 small (Hugging Face GPT2LMHeadModel, the architecture of ../shared/models/gpt2-small_b1s128:
1 x 128 tokens, logits out) and ResNet-50 (torchvision, batch 8, 224x224), each in fp32 and bf16,
random weights, inference mode. Each time is the median of 50 runs after 10 warm-ups, CUDA events
around one forward pass. torch.compile uses the default mode. Prints a table and writes JSON.
"""
import json
import sys


def median_us(fn, runs=50, warmup=10):
    import torch
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(runs):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        samples.append(start.elapsed_time(stop) * 1000.0)
    samples.sort()
    return samples[len(samples) // 2]


def models(torch):
    from transformers import GPT2Config, GPT2LMHeadModel
    import torchvision
    gpt2 = GPT2LMHeadModel(GPT2Config())  # 124 M parameters, the small model
    gpt2.config.use_cache = False
    ids = torch.randint(0, 50257, (1, 128))
    yield "gpt2-small b1 s128", gpt2, (ids,), lambda m, x: m(input_ids=x).logits
    resnet = torchvision.models.resnet50()
    images = torch.randn(8, 3, 224, 224)
    yield "resnet50 b8", resnet, (images,), lambda m, x: m(x)


def main():
    import torch
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    out_path = sys.argv[sys.argv.index("--out") + 1] if "--out" in sys.argv else None
    results = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "runs": []}
    for name, model, inputs, call in models(torch):
        for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            m = model.to("cuda", dtype=dtype).eval()
            args = [x.to("cuda", dtype=dtype) if x.is_floating_point() else x.to("cuda")
                    for x in inputs]
            with torch.inference_mode():
                eager = median_us(lambda: call(m, *args))
                compiled_model = torch.compile(m)
                compiled = median_us(lambda: call(compiled_model, *args))
            torch._dynamo.reset()
            row = {"model": name, "dtype": dtype_name, "eager_us": eager, "compile_us": compiled}
            results["runs"].append(row)
            print(f"{name:22s} {dtype_name:5s} eager {eager / 1000:8.3f} ms   "
                  f"torch.compile {compiled / 1000:8.3f} ms", flush=True)
    if out_path:
        with open(out_path, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
