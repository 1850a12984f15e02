#!/usr/bin/python3
"""bench/torch_densenet.py - the PyTorch reference for bench/densenet.lua.

The same network, batch, threads, loss and optimizer in Debian's PyTorch
(apt-get install python3-torch python3-torchvision), one configuration per
fresh process so that the peak resident memory (VmHWM) is that
configuration's alone. bench/compare.lua runs it with and without tcmalloc
(LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4).

    /usr/bin/python3 bench/torch_densenet.py [--mode train|eval|sgemm|embed] [--input 128]
        [--batch 32] [--threads 2] [--steps 5] [--embedding 32] [--n 2048]
        [--memory-efficient] [--no-optim] [--json]
        [--weights W.safetensors --x X.safetensors --out OUT.safetensors]   (embed)

train: median time of forward (training mode) of `batch` images = batch / 2
  pairs (first images, then second images) + faceid's contrastive loss
  (margin 2, eps 1e-7, labels alternately 0 = same and 1 = different) +
  backward + Adam (lr 3e-4, betas (0.9, 0.99), eps 1e-8) + zero_grad.
eval: median time of an evaluation-mode forward under torch.no_grad().
sgemm: a large square torch.mm (n x n).
embed: loads a faceid checkpoint (torchvision names) and an input tensor
  "x" from safetensors files, writes the evaluation-mode embeddings as the
  tensor "embeddings" of OUT (bench/compare.lua checks them against faceid).
GFLOP/s count as bench/densenet.lua counts them, from the layer shapes: 2
FLOPs per multiply-add of every convolution and the linear layer, training
3x minus the first convolution's input gradient, and the transition's 1x1
convolution at its pooled size (faceid pools first; the two commute), so
the GFLOP/s of the two compare as their images/s do.
--json prints one line with the same keys as bench/densenet.lua's, plus
"memory_efficient" and "tcmalloc".
"""
import argparse
import json
import os
import struct
import time

import torch
import torchvision

MARGIN, LOSS_EPS = 2.0, 1e-7


def parse_args():
    p = argparse.ArgumentParser(description="PyTorch DenseNet-121 reference benchmark")
    p.add_argument("--mode", choices=["train", "eval", "sgemm", "embed"], default="train")
    p.add_argument("--input", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--embedding", type=int, default=32)
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--memory-efficient", action="store_true")
    p.add_argument("--no-optim", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--weights")
    p.add_argument("--x")
    p.add_argument("--out")
    a = p.parse_args()
    for k in ("input", "batch", "threads", "steps", "embedding", "n"):
        if getattr(a, k) < 1:
            p.error("--%s must be a positive integer" % k)
    if a.mode == "train" and a.batch % 2:
        p.error("--batch must be even in train mode (it holds pairs)")
    if a.mode == "embed" and not (a.weights and a.x and a.out):
        p.error("--mode embed needs --weights, --x and --out")
    return a


def peak_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


# ---- safetensors, with nothing but struct and json ---------------------------

DTYPES = {"F32": (torch.float32, 4), "F64": (torch.float64, 8), "I64": (torch.int64, 8)}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in DTYPES:
            raise ValueError("%s: tensor %s has dtype %s" % (path, name, info["dtype"]))
        dtype, _ = DTYPES[info["dtype"]]
        lo, hi = info["data_offsets"]
        buf = bytearray(body[lo:hi])
        t = torch.frombuffer(buf, dtype=dtype) if hi > lo else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(info["shape"]).clone()
    return out


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        raw = t.detach().to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ---- the step ------------------------------------------------------------------

def contrastive(emb, labels):
    """faceid's ContrastiveLoss (csrc/loss.c): mean over pairs of D^2/2 for
    label 0 (same) and max(0, margin - D)^2/2 for label 1 (different), with
    D = sqrt(|a - b|^2 + eps)."""
    n = labels.shape[0]
    a, b = emb[:n], emb[n:]
    ss = ((a - b) ** 2).sum(1) + LOSS_EPS
    d = ss.sqrt()
    same = 0.5 * ss
    diff = 0.5 * torch.clamp(MARGIN - d, min=0.0) ** 2
    return torch.where(labels == 0, same, diff).mean()


def flops_per_image(model, size):
    """(forward, training step) FLOPs for one image, counted as faceid does"""
    macs, first = [], []

    def hook(name):
        def f(mod, inp, out):
            if isinstance(mod, torch.nn.Conv2d):
                h, w = out.shape[2], out.shape[3]
                if "transition" in name:
                    h, w = h // 2, w // 2
                m = mod.weight.numel() * h * w
            else:
                m = mod.weight.numel()
            if not first:
                first.append(m)
            macs.append(m)
        return f

    handles = [mod.register_forward_hook(hook(name)) for name, mod in model.named_modules()
               if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear))]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    model.train(was_training)
    for hd in handles:
        hd.remove()
    fwd = sum(macs)
    return 2 * fwd, 2 * (3 * fwd - first[0])


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def emit(args, fields, text):
    if args.json:
        print(json.dumps(fields, separators=(",", ":")))
    else:
        print(text)


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    tcmalloc = "tcmalloc" in os.environ.get("LD_PRELOAD", "")

    if args.mode == "sgemm":
        n = args.n
        g = torch.Generator().manual_seed(1)
        a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
        torch.mm(a, b)
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - t0)
        gflops = 2 * n ** 3 / median(times) / 1e9
        emit(args, {"framework": "pytorch", "mode": "sgemm", "n": n, "threads": args.threads,
                    "steps": args.steps, "gflops": gflops, "peak_rss_mib": peak_rss_mib(),
                    "tcmalloc": tcmalloc},
             "torch.mm %dx%d threads=%d: %.1f GFLOP/s (median of %d)" % (n, n, args.threads, gflops, args.steps))
        return

    model = torchvision.models.densenet121(num_classes=args.embedding, memory_efficient=args.memory_efficient)

    if args.mode == "embed":
        state = read_safetensors(args.weights)
        state = {k: v for k, v in state.items() if not k.startswith(("optimizer.", "train."))}
        model.load_state_dict(state, strict=True)
        x = read_safetensors(args.x)["x"]
        model.eval()
        with torch.no_grad():
            emb = model(x)
        write_safetensors(args.out, {"embeddings": emb})
        return

    fwd_flops, train_flops = flops_per_image(model, args.input)
    g = torch.Generator().manual_seed(2018)
    x = torch.randn(args.batch, 3, args.input, args.input, generator=g)
    times = []
    optim = args.mode == "train" and not args.no_optim
    if args.mode == "train":
        labels = torch.tensor([float(p % 2) for p in range(args.batch // 2)])
        opt = torch.optim.Adam(model.parameters(), lr=3e-4, betas=(0.9, 0.99), eps=1e-8) if optim else None
        model.train()
        for step in range(args.steps + 1):
            t0 = time.perf_counter()
            loss = contrastive(model(x), labels)
            loss.backward()
            if opt is not None:
                opt.step()
            model.zero_grad()
            if step > 0:
                times.append(time.perf_counter() - t0)  # step 0 allocates
    else:
        model.eval()
        with torch.no_grad():
            for step in range(args.steps + 1):
                t0 = time.perf_counter()
                model(x)
                if step > 0:
                    times.append(time.perf_counter() - t0)
    t = median(times)
    per_image = train_flops if args.mode == "train" else fwd_flops
    ips, gflops, peak = args.batch / t, per_image * args.batch / t / 1e9, peak_rss_mib()
    emit(args, {"framework": "pytorch", "mode": args.mode, "input": args.input, "batch": args.batch,
                "threads": args.threads, "steps": args.steps, "optim": optim, "images_per_s": ips,
                "ms_per_step": 1000 * t, "gflops": gflops, "peak_rss_mib": peak,
                "memory_efficient": args.memory_efficient, "tcmalloc": tcmalloc},
         "torch densenet121 %-5s input=%d batch=%d threads=%d%s%s%s: %7.1f img/s  %7.1f ms/step  "
         "%6.1f GFLOP/s  peak RSS %6.0f MiB"
         % (args.mode, args.input, args.batch, args.threads, "" if optim or args.mode != "train" else " no-optim",
            " memory-efficient" if args.memory_efficient else "", " tcmalloc" if tcmalloc else "",
            ips, 1000 * t, gflops, peak))


if __name__ == "__main__":
    main()
