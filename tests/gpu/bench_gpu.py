#!/usr/bin/env python3
"""bench_gpu.py - the GPU benchmark of issue 5, run by tests/gpu/run.sh.

A model of N TransformerEncoderLayer(d_model, nhead, dim_feedforward) in
bfloat16, made here by PyTorch (seeded) and handed to slyced as N built-in
`transformer_encoder_layer` slices, each loading its own safetensors file of
the same weights, run as one pipeline on one input. In one run it measures,
side by side:

  copy floor     weight bytes / the pinned host-to-GPU bandwidth measured here
  active_only    slyced, only the running slice (+ prefetch) on the GPU; every
                 layer is evicted to host memory before each timed forward,
                 so that it moves what the copy floor counts
  limit_gpu 2G   slyced with 2 GB of weights allowed on the GPU (1 GB more
                 reserved for activations); the note gives the bytes each
                 timed forward moved and their floor
  limit_gpu 8G   the same with 8 GB, or the whole model if smaller
  cold disk      slyced with a host budget of a quarter of the model, every
                 layer evicted to its cache file and its pages dropped before
                 each timed forward, against the disk floor (dd iflag=direct
                 over the bytes that forward read)
  restart        that daemon's first forward, right after it started with
                 the cache files in place (it declares each layer and reads
                 its file: no weights file, no initialisation), against the
                 disk floor of every file
  resident       all layers on the GPU in PyTorch
  accelerate     accelerate.cpu_offload(model, execution_device,
                 preload_module_classes=["TransformerEncoderLayer"]) on a copy
                 of the model, when accelerate is installed

Every slyced output is compared with PyTorch's, by its default path and by
the matmul-softmax attention slyced's built-in runs (bfloat16 rounds
differently along each): max |error| / max |output| within 2e-2 against
either. The weights' high-water mark on the GPU is held against their budget,
and with libtorch's peak (activations) against max_gpu_mem_mb. slyced's
figure for a forward is its own `timing.total_us` (what it spent from the
request to the reply), the median of --reps forwards after one warm-up
forward. Results go to --out as bench.md (a table) and bench.json, written
again after every phase; a phase that fails is reported and the others run.

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

# Looked up here, not after fork: the child of a threaded process should
# call nothing that may take a lock.
_prctl = ctypes.CDLL(None, use_errno=True).prctl
CTL_TIMEOUT_S = 300  # one slyctl call; a cold forward of 6.4 GB at 0.5 GB/s is 13 s


def die_with_parent():
    """In the forked child: SIGKILL when this script dies, so that a run.sh
    step limit that kills the script does not leave a daemon holding GPU
    memory for the steps after it (PR_SET_PDEATHSIG is 1)."""
    _prctl(1, signal.SIGKILL)


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def slice_entry(a, i, path):
    return {"name": f"l{i}", "constructor": "transformer_encoder_layer",
            "config": {"d_model": a.d_model, "nhead": a.nhead,
                       "dim_feedforward": a.ff, "activation": "relu",
                       "norm_first": False, "layer_norm_eps": 1e-5,
                       "batch_first": True, "dtype": "bfloat16",
                       "weights": path}}


class Slyced:
    """One daemon on the model's slices, as pipeline "p", with `keys` on top
    of the common config."""

    def __init__(self, a, work, name, keys, paths):
        self.a, self.dir, self.n = a, os.path.join(work, name), len(paths)
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
        self.proc.kill()
        raise RuntimeError(f"{name}: slyced did not answer in 60 s")

    def ctl(self, *args, check=True):
        try:
            r = subprocess.run([self.a.slyctl, "-s", self.sock, *args],
                               capture_output=True, text=True, timeout=CTL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"slyctl {' '.join(args)}: no answer in {CTL_TIMEOUT_S} s")
        if check and r.returncode != 0:
            raise RuntimeError(f"slyctl {' '.join(args)}: {r.stderr.strip()}")
        return r

    def forward(self, x_npy, out_npy):
        r = self.ctl("--json", "forward", "--pipeline", "p", "--in", x_npy,
                     "--out", out_npy, "--cast", "bfloat16")
        return json.loads(r.stdout)["timing"]

    def stats(self):
        return json.loads(self.ctl("--json", "stats").stdout)

    def settle(self):
        """Waits (up to 30 s) until no prefetch is queued or moving."""
        for _ in range(300):
            if not self.stats().get("prefetch", {}).get("pending"):
                return
            time.sleep(0.1)

    def evict_all(self, tier):
        """Every slice down to at most `tier`, once the prefetches are done:
        the next forward then moves every layer, as the row says."""
        self.settle()
        for i in range(self.n):
            self.ctl("evict", f"l{i}", tier, check=False)

    def stop(self):
        self.ctl("shutdown", check=False)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def errors(got, want):
    """DESIGN.md's relative error, max |got - want| / max |want| (the tests'),
    and the L2 one, |got - want| / |want|."""
    d = (got.astype(np.float64) - want.astype(np.float64))
    scale = max(float(np.max(np.abs(want))), 1e-6)
    l2 = float(np.linalg.norm(d) / max(np.linalg.norm(want.astype(np.float64)), 1e-6))
    return float(np.max(np.abs(d))) / scale, l2


def moved(st):
    t = st["transfers"]
    return {"cpu_to_gpu": t["cpu_to_gpu"]["bytes"], "disk_to_cpu": t["disk_to_cpu"]["bytes"],
            "disk_to_gpu": t.get("disk_to_gpu", {}).get("bytes", 0)}


def run_mode(a, work, name, keys, paths, x_npy, ref, before_rep=None):
    """A daemon's first forward (after its start), then a.reps timed ones,
    each after before_rep(daemon) when given, with the bytes each moved (the
    stats before and after it: the transfer counters add up over the
    daemon's life)."""
    log(f"{name}: start")
    d = Slyced(a, work, name, keys, paths)
    try:
        out = os.path.join(d.dir, "y.npy")
        first = d.forward(x_npy, out)["total_us"] / 1e3
        log(f"{name}: first forward {first:.1f} ms")
        times, per = [], []
        for _ in range(a.reps):
            if before_rep is not None:
                before_rep(d)
            m0 = moved(d.stats())
            times.append(d.forward(x_npy, out)["total_us"] / 1e3)
            m1 = moved(d.stats())
            per.append({k: m1[k] - m0[k] for k in m1})
        got = np.load(out)
        errs = {k: errors(got, r) for k, r in ref.items()}
        err, l2 = min(errs.values())
        st = d.stats()
        gpu = st.get("memory", {}).get("gpu", {})
        torch_peak = (gpu.get("torch_allocator") or {}).get("peak_allocated")
        row = {"mode": name, "ms": statistics.median(times) if times else None,
               "first_ms": first, "rel_err": err, "l2_err": l2,
               "errors_by_reference": errs, "output_ok": err <= 2e-2,
               "gpu_high_water": gpu.get("high_water"), "gpu_budget": gpu.get("budget"),
               "torch_peak_allocated": torch_peak,
               # The whole device budget, activations included, under
               # limit_gpu only: active_only's max_gpu_mem_mb is the weights'.
               "max_gpu_mem_mb": keys.get("max_gpu_mem_mb")
               if keys.get("gpu_strategy") == "limit_gpu" else None,
               "moved_per_forward": {k: statistics.mean(p[k] for p in per) for k in per[0]}
               if per else None,
               "prefetch": st.get("prefetch")}
        log(f"{name}: median {row['ms']} ms, rel err {errs}")
        return row
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
    del h, g
    torch.cuda.empty_cache()
    return n / best


def drop_page_cache(files):
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def dd_seconds(files):
    """dd over every file with O_DIRECT; where the file system refuses it,
    a buffered dd after dropping the pages (the note says which)."""
    total, how = 0.0, "dd iflag=direct"
    for f in files:
        drop_page_cache([f])
        t0 = time.perf_counter()
        r = subprocess.run(["dd", f"if={f}", "of=/dev/null", "bs=16M", "iflag=direct"],
                           capture_output=True)
        if r.returncode != 0:
            how = "dd, buffered (O_DIRECT refused here)"
            drop_page_cache([f])
            t0 = time.perf_counter()
            subprocess.run(["dd", f"if={f}", "of=/dev/null", "bs=16M"], check=True,
                           capture_output=True)
        total += time.perf_counter() - t0
    return total, how


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


def reference_bmm(model, x):
    """PyTorch's output by the arithmetic slyced's built-in runs: libtorch's
    multi_head_attention_forward is matmuls, a softmax and matmuls, which
    Python's attention takes only when asked for the weights (otherwise SDPA,
    fused or flash kernels). bfloat16 rounds differently along each path, so
    the output is held against both this and PyTorch's default."""
    import torch.nn.functional as F
    with torch.inference_mode():
        for l in model:
            a, _ = l.self_attn(x, x, x, need_weights=True, average_attn_weights=False)
            x = l.norm1(x + a)
            x = l.norm2(x + l.linear2(F.relu(l.linear1(x))))
        return x.float().cpu().numpy()


# ---- the run ---------------------------------------------------------------

class Results:
    """What the run has measured so far; bench.md and bench.json are written
    again after every phase, so that a run stopped part way keeps them."""

    def __init__(self, a, total):
        self.a, self.total = a, total
        self.rows, self.errors, self.v = [], [], {}

    def fail(self, phase, e):
        log(f"{phase}: FAILED: {e}")
        self.errors.append(f"{phase}: {e}")

    def table(self):
        a, v = self.a, self.v
        bw, floor_ms = v.get("pinned_bps"), v.get("copy_floor_ms")
        lines = [f"GPU benchmark: {a.layers} x TransformerEncoderLayer({a.d_model}, "
                 f"{a.nhead}, {a.ff}) bfloat16, input {a.batch}x{a.seq}x{a.d_model}, "
                 f"{self.total / 1e9:.2f} GB of weights, device {a.device}, "
                 f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
                 "",
                 "Output: max |slyced - PyTorch| / max |PyTorch| against PyTorch's default "
                 "(fast) and its matmul-softmax attention (bmm); ok when either is within 2e-2.",
                 "",
                 "| what | ms / forward | against | ratio | output | note |",
                 "| --- | --- | --- | --- | --- | --- |"]
        if floor_ms:
            lines.append(f"| copy floor | {floor_ms:.1f} | pinned H2D {bw / 1e9:.1f} GB/s "
                         f"| 1.00 | | |")
        for r in self.rows:
            ms, mv = r["ms"], r["moved_per_forward"] or {}
            against, ref_ms, note = "copy floor", floor_ms, []
            if r["mode"] == "cold disk":
                ds, db = v.get("disk_floor_s"), v.get("disk_bytes")
                against = f"disk floor ({v.get('disk_how', 'dd')}, same bytes)"
                ref_ms = ds * 1e3 * mv.get("disk_to_cpu", 0) / db if ds and db else None
                note.append(f"read {mv.get('disk_to_cpu', 0) / 1e9:.2f} GB a forward")
            elif mv:
                gb = mv.get("cpu_to_gpu", 0) / 1e9
                note.append(f"moved {gb:.2f} GB a forward"
                            + (f" (its floor {gb * 1e9 / bw * 1e3:.1f} ms)" if bw else ""))
            ratio = f"{ms / ref_ms:.2f}" if ms and ref_ms else "-"
            hw, budget = r["gpu_high_water"], r["gpu_budget"]
            if hw is not None and budget:
                note.append(f"weights on the GPU at most {hw / 2**20:.0f} of {budget / 2**20:.0f} MiB"
                            + (" OVER BUDGET" if hw > budget else ""))
                tp, mx = r["torch_peak_allocated"], r["max_gpu_mem_mb"]
                if tp is not None and mx:
                    note.append(f"+ libtorch's peak {tp / 2**20:.0f} MiB, of "
                                f"max_gpu_mem_mb {mx}"
                                + (" OVER" if hw + tp > mx * 2**20 else ""))
            out = f"{'ok' if r['output_ok'] else 'WRONG'} (" + ", ".join(
                f"{k} {e[0]:.1e}" for k, e in r["errors_by_reference"].items()) + ")"
            lines.append(f"| slyced {r['mode']} | {ms:.1f} | {against} | {ratio} | {out} "
                         f"| {'; '.join(note)} |" if ms else
                         f"| slyced {r['mode']} | - | | | {out} | |")
        if v.get("resident_ms"):
            lines.append(f"| PyTorch, all resident | {v['resident_ms']:.1f} | | | | "
                         f"fast path; against the bmm path "
                         f"{v.get('fast_vs_bmm', 0):.1e} |")
        cold = next((r for r in self.rows if r["mode"] == "cold disk"), None)
        if cold and v.get("disk_floor_s"):
            ms, fl = cold["first_ms"], v["disk_floor_s"] * 1e3
            lines.append(f"| slyced restart, first forward | {ms:.1f} | disk floor, every "
                         f"file | {ms / fl:.2f} | | |")
        if v.get("accelerate_ms"):
            lines.append(f"| accelerate.cpu_offload | {v['accelerate_ms']:.1f} | | | | "
                         f"{v.get('accelerate_note', '')} |")
        else:
            lines.append(f"| accelerate.cpu_offload | - | | | | "
                         f"{v.get('accelerate_note', 'not run')} |")
        for e in self.errors:
            lines.append(f"\nFAILED: {e}")
        return "\n".join(lines)

    def save(self):
        os.makedirs(self.a.out, exist_ok=True)
        text = self.table()
        with open(os.path.join(self.a.out, "bench.md"), "w") as f:
            f.write(text + "\n")
        with open(os.path.join(self.a.out, "bench.json"), "w") as f:
            json.dump(dict(self.v, rows=self.rows, errors=self.errors), f, indent=1)
        return text

    def bad(self):
        def over(r):
            hw, b, tp, mx = (r["gpu_high_water"], r["gpu_budget"],
                             r["torch_peak_allocated"], r["max_gpu_mem_mb"])
            return (hw is not None and b and hw > b) or \
                (hw is not None and tp is not None and mx and hw + tp > mx * 2**20)
        return self.errors or [r for r in self.rows if not r["output_ok"] or over(r)]


def main():
    a = parse_args()
    os.makedirs(a.out, exist_ok=True)
    work = a.work or tempfile.mkdtemp(prefix="slybench-gpu-")
    os.makedirs(work, exist_ok=True)
    try:
        return run(a, work)
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)


def run(a, work):
    cuda = a.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    log("making the layers")
    layers = make_layers(a)
    model = nn.Sequential(*layers).eval()
    one = layer_bytes(layers[0])
    total = one * a.layers
    res = Results(a, total)
    paths = []
    for i, l in enumerate(layers):
        p = os.path.join(work, f"l{i}.safetensors")
        write_safetensors(p, l.state_dict())
        paths.append(p)
    log(f"wrote {len(paths)} safetensors files, {total / 1e9:.2f} GB")
    torch.manual_seed(1)
    x = torch.randn(a.batch, a.seq, a.d_model)
    x_npy = os.path.join(work, "x.npy")
    np.save(x_npy, x.numpy())
    xb = x.to(torch.bfloat16)
    dev = a.device if cuda else "cpu"
    # The reference, and the all-resident figure: PyTorch on the GPU (the
    # CPU would take minutes over a model this size), else on the CPU.
    if cuda:
        model.to(dev)
        resident_ms, y = time_torch(model, xb.to(dev), a.reps, sync)
        ref = {"fast": y.float().cpu().numpy(), "bmm": reference_bmm(model, xb.to(dev))}
        res.v["resident_ms"] = resident_ms
        model.to("cpu")
        del y
        torch.cuda.empty_cache()
    else:
        with torch.inference_mode():
            ref = {"fast": model(xb).float().numpy(), "bmm": reference_bmm(model, xb)}
    res.v["fast_vs_bmm"] = errors(ref["fast"], ref["bmm"])[0]
    log("reference done")
    res.v["pinned_bps"] = bw = pinned_bandwidth(a, total)
    res.v["copy_floor_ms"] = total / bw * 1e3 if bw else None
    res.save()

    mb = lambda b: int(-(-b // (1 << 20)))
    host_all = {"max_cpu_mem_mb": mb(total * 1.1) + 64}

    def phase(name, fn):
        try:
            fn()
        except Exception as e:  # one phase's failure must not lose the others
            res.fail(name, e)
        res.save()

    # active_only: every layer comes from host memory in each timed forward
    # (what the copy floor counts), not just those the wrap-around prefetch
    # left out between two slyctl calls.
    phase("active_only", lambda: res.rows.append(run_mode(
        a, work, "active_only",
        dict(host_all, gpu_strategy="active_only", max_gpu_mem_mb=mb(one * 2.2)),
        paths, x_npy, ref, before_rep=lambda d: d.evict_all("cpu"))))
    # limit_gpu: the layers that stay are the point; between two forwards the
    # prefetch may bring in one more, outside the timed forward (the note
    # gives the bytes each timed forward moved and their floor).
    reserve = 1024 if not a.small else 1
    for gb in (2, 8):
        budget = mb(min(gb << 30, total * 1.05)) if not a.small else mb(total / (8 / gb) / 2)
        name = f"limit_gpu {gb}G ({budget} MiB)"
        phase(name, lambda name=name, budget=budget: res.rows.append(run_mode(
            a, work, name,
            dict(host_all, gpu_strategy="limit_gpu", max_gpu_mem_mb=budget + reserve,
                 gpu_reserve_mb=reserve),
            paths, x_npy, ref, before_rep=lambda d: d.settle())))

    cache = os.path.join(work, "cache")
    keys = {"gpu_strategy": "active_only", "max_gpu_mem_mb": mb(one * 2.2),
            "max_cpu_mem_mb": max(mb(total / 4), mb(one * 2.2)),
            "disk_cache_path": cache}

    def cold_disk():
        # The first daemon writes every cache file; the measured one reads them.
        log("cache-writer: start")
        w = Slyced(a, work, "cache-writer", keys, paths)
        try:
            for i in range(a.layers):
                w.ctl("load", f"l{i}", "disk")
        finally:
            w.stop()
        files = sorted(os.path.join(cache, f) for f in os.listdir(cache)
                       if f.endswith(".safetensors"))
        res.v["disk_bytes"] = sum(os.path.getsize(f) for f in files)
        res.v["disk_floor_s"], res.v["disk_how"] = dd_seconds(files)
        log(f"disk floor {res.v['disk_floor_s']:.2f} s over {len(files)} files")

        def cold(d):  # every layer back to its file, its pages dropped
            d.evict_all("disk")
            drop_page_cache(files)
        drop_page_cache(files)
        res.rows.append(run_mode(a, work, "cold disk", keys, paths, x_npy, ref,
                                 before_rep=cold))
    phase("cold disk", cold_disk)

    def offload():
        try:
            import accelerate
        except ImportError:
            res.v["accelerate_note"] = "accelerate not installed"
            return
        if not cuda:
            res.v["accelerate_note"] = "no GPU"
            return
        import copy
        log("accelerate: start")
        m2 = copy.deepcopy(model).eval()
        accelerate.cpu_offload(m2, execution_device=torch.device(dev),
                               preload_module_classes=["TransformerEncoderLayer"])
        res.v["accelerate_ms"], y = time_torch(m2, xb.to(dev), a.reps, sync)
        res.v["accelerate_note"] = "rel err %.1e" % errors(y.float().cpu().numpy(),
                                                            ref["fast"])[0]
        log(f"accelerate: {res.v['accelerate_ms']:.1f} ms")
    phase("accelerate", offload)

    print(res.save(), flush=True)
    return 1 if res.bad() else 0


if __name__ == "__main__":
    sys.exit(main())
