#!/usr/bin/env python3
"""bench_gpu.py - the GPU benchmark of issue 5, run by tests/gpu/run.sh.

A model of N TransformerEncoderLayer(d_model, nhead, dim_feedforward) in
bfloat16, made here by PyTorch (seeded) and handed to slyced as N built-in
`transformer_encoder_layer` slices, each loading its own safetensors file of
the same weights, run as one pipeline on one input. In one run it measures,
side by side:

  copy floor     weight bytes / the pinned host-to-GPU bandwidth measured here
  active_only    slyced, only the running slice (+ prefetch) on the GPU
  limit_gpu 2G   slyced with 2 GB of weights allowed on the GPU
  limit_gpu 8G   the same with 8 GB
  cold disk      slyced with a host budget of a quarter of the model, every
                 layer read from the disk cache with the page cache dropped,
                 against the disk floor (dd iflag=direct over the same files)
  restart        that daemon's first forward, right after it started with
                 the cache files in place (it declares each layer and reads
                 its file: no weights file, no initialisation), against the
                 disk floor of every file
  resident       all layers on the GPU in PyTorch
  accelerate     accelerate.cpu_offload(model, execution_device,
                 preload_module_classes=["TransformerEncoderLayer"]), when
                 accelerate is installed

Every slyced output is compared with PyTorch's (relative error 2e-2, as for
bfloat16 everywhere), and the GPU tier's high-water mark with its budget.
slyced's figure for a forward is its own `timing.total_us` (what it spent
from the request to the reply), the median of --reps forwards after one
warm-up forward. Results go to --out as bench.md (a table) and bench.json.

`--small` makes a model of a few MB on the `sim` device for a rehearsal on a
machine without a GPU: every path runs, the figures mean nothing.
"""
import argparse
import ctypes
import json
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from torch import nn


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--slyced", required=True)
    p.add_argument("--slyctl", required=True)
    p.add_argument("--out", default="tests/gpu/results")
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--d-model", type=int, default=4096)
    p.add_argument("--nhead", type=int, default=32)
    p.add_argument("--ff", type=int, default=16384)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--work", default=None, help="scratch folder (default: a temp one)")
    p.add_argument("--small", action="store_true",
                   help="a tiny model on the sim device: a rehearsal without a GPU")
    a = p.parse_args()
    if a.small:
        a.layers, a.d_model, a.nhead, a.ff, a.batch, a.seq = 4, 64, 4, 128, 2, 8
        a.device = "sim"
    return a


# ---- the model and its files ------------------------------------------------

def make_layers(a):
    torch.manual_seed(0)
    layers = []
    for _ in range(a.layers):
        l = nn.TransformerEncoderLayer(a.d_model, a.nhead, a.ff, dropout=0.0,
                                       batch_first=True)
        layers.append(l.to(torch.bfloat16).eval())
    return layers


def write_safetensors(path, state):
    """The format as safetensors defines it: a little-endian u64 header
    length, the JSON header, the data (no extra package needed)."""
    header, blobs, off = {}, [], 0
    for name, t in state.items():
        t = t.detach().contiguous().cpu()
        assert t.dtype == torch.bfloat16, name
        raw = t.view(torch.int16).numpy().tobytes()
        header[name] = {"dtype": "BF16", "shape": list(t.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def layer_bytes(layer):
    return sum(t.numel() * t.element_size()
               for t in list(layer.parameters()) + list(layer.buffers()))


# ---- slyced ----------------------------------------------------------------

def die_with_parent():
    """In the forked child: SIGKILL when this script dies, so that a run.sh
    step limit that kills the script does not leave a daemon holding GPU
    memory for the steps after it (PR_SET_PDEATHSIG is 1)."""
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)


def slice_entry(a, i, path):
    return {"name": f"l{i}", "constructor": "transformer_encoder_layer",
            "config": {"d_model": a.d_model, "nhead": a.nhead,
                       "dim_feedforward": a.ff, "activation": "relu",
                       "norm_first": False, "layer_norm_eps": 1e-5,
                       "batch_first": True, "dtype": "bfloat16",
                       "weights": path}}


class Slyced:
    """One slyced with the config `keys` plus the model's slices."""

    def __init__(self, a, work, name, keys, paths):
        self.a, self.dir = a, os.path.join(work, name)
        os.makedirs(self.dir, exist_ok=True)
        self.sock = os.path.join(self.dir, "s.sock")
        cfg = {"socket": self.sock,
               "log": {"file": os.path.join(self.dir, "slyced.log"),
                       "level": "info", "console": False},
               "device": a.device, "prefetch_depth": 1,
               "slices": [slice_entry(a, i, p) for i, p in enumerate(paths)],
               "pipelines": {"p": [f"l{i}" for i in range(len(paths))]}}
        cfg.update(keys)
        self.config = os.path.join(self.dir, "slyced.json")
        with open(self.config, "w") as f:
            json.dump(cfg, f, indent=1)
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen([a.slyced, "-c", self.config],
                                     stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, "stderr.log"), "w"),
                                     env=env, preexec_fn=die_with_parent)
        for _ in range(600):
            if os.path.exists(self.sock) and self.ctl("status", check=False).returncode == 0:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name}: slyced exited {self.proc.returncode}")
            time.sleep(0.1)
        raise RuntimeError(f"{name}: slyced did not answer in 60 s")

    def ctl(self, *args, check=True):
        r = subprocess.run([self.a.slyctl, "-s", self.sock, *args],
                           capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"slyctl {' '.join(args)}: {r.stderr.strip()}")
        return r

    def forward(self, x_npy, out_npy):
        r = self.ctl("--json", "forward", "--pipeline", "p", "--in", x_npy,
                     "--out", out_npy, "--cast", "bfloat16")
        return json.loads(r.stdout)["timing"]

    def stats(self):
        return json.loads(self.ctl("--json", "stats").stdout)

    def stop(self):
        self.ctl("shutdown", check=False)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def close_enough(got, want):
    err = np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-6)
    return err, err <= 2e-2


def run_mode(a, work, name, keys, paths, x_npy, ref, drop_cache=None):
    d = Slyced(a, work, name, keys, paths)
    try:
        out = os.path.join(d.dir, "y.npy")
        times, first = [], None
        for rep in range(a.reps + 1):
            if drop_cache is not None:
                drop_cache()
            t = d.forward(x_npy, out)
            if rep == 0:
                first = t["total_us"] / 1e3
            else:
                times.append(t["total_us"] / 1e3)
        err, ok = close_enough(np.load(out), ref)
        st = d.stats()
        gpu = st.get("memory", {}).get("gpu", {})
        return {"mode": name, "ms": statistics.median(times), "first_ms": first,
                "rel_err": float(err), "output_ok": bool(ok),
                "gpu_high_water": gpu.get("high_water"),
                "gpu_budget": gpu.get("budget"),
                "moved_cpu_to_gpu": st["transfers"]["cpu_to_gpu"]["bytes"],
                "moved_disk_to_cpu": st["transfers"]["disk_to_cpu"]["bytes"],
                # reads whose copy to the GPU followed them chunk by chunk
                "moved_disk_to_gpu": st["transfers"].get("disk_to_gpu", {}).get("bytes"),
                "prefetch": st.get("prefetch")}
    finally:
        d.stop()


# ---- floors and PyTorch baselines ------------------------------------------

def pinned_bandwidth(a, nbytes):
    if not a.device.startswith("cuda"):
        return None
    n = min(nbytes, 1 << 30)
    h = torch.empty(n, dtype=torch.uint8).pin_memory()
    g = torch.empty(n, dtype=torch.uint8, device=a.device)
    best = None
    for _ in range(3):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        g.copy_(h, non_blocking=True)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return n / best


def dd_seconds(files):
    total = 0.0
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
        t0 = time.perf_counter()
        subprocess.run(["dd", f"if={f}", "of=/dev/null", "bs=16M", "iflag=direct"],
                       check=True, capture_output=True)
        total += time.perf_counter() - t0
    return total


def time_torch(model, x, reps, sync):
    with torch.inference_mode():
        model(x)
        sync()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            y = model(x)
            sync()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), y


def main():
    a = parse_args()
    os.makedirs(a.out, exist_ok=True)
    work = a.work or tempfile.mkdtemp(prefix="slybench-gpu-")
    cuda = a.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    layers = make_layers(a)
    model = nn.Sequential(*layers).eval()
    one = layer_bytes(layers[0])
    total = one * a.layers
    paths = []
    for i, l in enumerate(layers):
        p = os.path.join(work, f"l{i}.safetensors")
        write_safetensors(p, l.state_dict())
        paths.append(p)
    torch.manual_seed(1)
    x = torch.randn(a.batch, a.seq, a.d_model)
    x_npy = os.path.join(work, "x.npy")
    np.save(x_npy, x.numpy())
    xb = x.to(torch.bfloat16)
    dev = a.device if cuda else "cpu"
    # The reference, and the all-resident figure: PyTorch on the GPU (the
    # CPU would take minutes over a model this size), else on the CPU.
    if cuda:
        resident_ms, y = time_torch(model.to(dev), xb.to(dev), a.reps, sync)
        ref = y.float().cpu().numpy()
        model.to("cpu")
        del y
        torch.cuda.empty_cache()
    else:
        resident_ms = None
        with torch.inference_mode():
            ref = model(xb).float().numpy()
    mb = lambda b: int(-(-b // (1 << 20)))
    rows = []
    host_all = {"max_cpu_mem_mb": mb(total * 1.1) + 64}
    rows.append(run_mode(a, work, "active_only",
                         dict(host_all, gpu_strategy="active_only",
                              max_gpu_mem_mb=mb(one * 2.2)), paths, x_npy, ref))
    for gb in (2, 8):
        budget = mb(min(gb << 30, total * 1.05)) if not a.small else mb(total / (8 / gb) / 2)
        rows.append(run_mode(a, work, f"limit_gpu {gb}G",
                             dict(host_all, gpu_strategy="limit_gpu",
                                  max_gpu_mem_mb=budget + 256, gpu_reserve_mb=256),
                             paths, x_npy, ref))
    cache = os.path.join(work, "cache")
    keys = {"gpu_strategy": "active_only", "max_gpu_mem_mb": mb(one * 2.2),
            "max_cpu_mem_mb": max(mb(total / 4), mb(one * 2.2)),
            "disk_cache_path": cache}
    # The first daemon writes every cache file; the measured one reads them.
    w = Slyced(a, work, "cache-writer", keys, paths)
    for i in range(a.layers):
        w.ctl("load", f"l{i}", "disk")
    w.stop()
    files = sorted(os.path.join(cache, f) for f in os.listdir(cache)
                   if f.endswith(".safetensors"))

    def drop():
        for f in files:
            fd = os.open(f, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
    cold = run_mode(a, work, "cold disk", keys, paths, x_npy, ref, drop_cache=drop)
    rows.append(cold)
    disk_s = dd_seconds(files)
    disk_bytes = sum(os.path.getsize(f) for f in files)

    bw = pinned_bandwidth(a, total)
    floor_ms = total / bw * 1e3 if bw else None
    acc_ms, acc_note = None, ""
    try:
        import accelerate
        if cuda:
            m2 = nn.Sequential(*make_layers(a)).eval()
            accelerate.cpu_offload(m2, execution_device=torch.device(dev),
                                   preload_module_classes=["TransformerEncoderLayer"])
            acc_ms, y = time_torch(m2, xb.to(dev), a.reps, sync)
            acc_note = "rel err %.1e" % close_enough(y.float().cpu().numpy(), ref)[0]
    except ImportError:
        acc_note = "accelerate not installed"

    lines = [f"GPU benchmark: {a.layers} x TransformerEncoderLayer({a.d_model}, "
             f"{a.nhead}, {a.ff}) "
             f"bfloat16, input {a.batch}x{a.seq}x{a.d_model}, {total / 1e9:.2f} GB "
             f"of weights, device {a.device}, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             "",
             "| what | ms / forward | against | ratio | output | note |",
             "| --- | --- | --- | --- | --- | --- |"]
    if floor_ms:
        lines.append(f"| copy floor | {floor_ms:.1f} | pinned H2D {bw / 1e9:.1f} GB/s "
                     f"| 1.00 | | |")
    for r in rows:
        ref_ms = floor_ms
        against = "copy floor"
        if r["mode"] == "cold disk":
            ref_ms, against = disk_s * 1e3 * r["moved_disk_to_cpu"] / max(disk_bytes, 1), \
                "disk floor (dd iflag=direct, same bytes)"
            ms = r["first_ms"] if a.reps == 0 else r["ms"]
        else:
            ms = r["ms"]
        ratio = f"{ms / ref_ms:.2f}" if ref_ms else "-"
        hw, budget = r["gpu_high_water"], r["gpu_budget"]
        note = (f"GPU high water {hw / 2**20:.0f} of {budget / 2**20:.0f} MiB"
                if hw is not None and budget else "")
        if hw is not None and budget and hw > budget:
            note += " OVER BUDGET"
        lines.append(f"| slyced {r['mode']} | {ms:.1f} | {against} | {ratio} | "
                     f"{'ok' if r['output_ok'] else 'WRONG'} ({r['rel_err']:.1e}) | {note} |")
    if resident_ms:
        lines.append(f"| PyTorch, all resident | {resident_ms:.1f} | | | | |")
    restart_ms, restart_floor = cold["first_ms"], disk_s * 1e3
    lines.append(f"| slyced restart, first forward | {restart_ms:.1f} | disk floor, "
                 f"every file | {restart_ms / restart_floor:.2f} | | |")
    lines.append(f"| accelerate.cpu_offload | {acc_ms:.1f} | | | | {acc_note} |"
                 if acc_ms else f"| accelerate.cpu_offload | - | | | | {acc_note} |")
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(a.out, "bench.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(a.out, "bench.json"), "w") as f:
        json.dump({"rows": rows, "copy_floor_ms": floor_ms, "pinned_bps": bw,
                   "disk_floor_s": disk_s, "disk_bytes": disk_bytes,
                   "restart_first_ms": restart_ms,
                   "resident_ms": resident_ms, "accelerate_ms": acc_ms}, f, indent=1)
    if a.work is None:
        shutil.rmtree(work, ignore_errors=True)
    bad = [r for r in rows if not r["output_ok"] or
           (r["gpu_high_water"] is not None and r["gpu_budget"] and
            r["gpu_high_water"] > r["gpu_budget"])]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
