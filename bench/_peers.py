"""Shared driver of the per-workload benchmarks (bench_mlp.py, bench_unet.py).

Each workload script calls main(workload): with no --child argument it runs
itself once per thread count (1, then 2) as a child process whose
environment pins every side to that count and gives each peer its best
settings:
  OMP_NUM_THREADS=N OPENBLAS_NUM_THREADS=N (and torch.set_num_threads(N),
  ONNX Runtime's intraOpNumThreads=N, libdiffuse's NUM_THREADS=N);
  OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (for this command only);
  MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736, without which glibc
  hands PyTorch's buffers back to the kernel and PyTorch page-faults on
  every step (libdiffuse allocates nothing in a step, so it is unaffected).
PyTorch runs in worker processes of its own (--torch-worker), one per
OpenMP wait policy its libgomp is given: at one thread the default; at more,
the default and OMP_WAIT_POLICY=PASSIVE.  With the default, libgomp's idle
threads spin while OpenBLAS's threads want the same cores: on 2 cores
PyTorch's MLP training runs at a third of its one-thread speed (measured:
7.2 steps/s against 24.2 passive).  Passive is slower on other workloads
(the small U-Net's training), so both run and each kind (training,
sampling) is compared against the faster policy's median, named in the
output.  libdiffuse stays in the child, so no setting of PyTorch's reaches
it.  (OMP_WAIT_POLICY=ACTIVE is left out: its threads would spin without end
while the other sides run.)
The child runs the sides in alternating rounds (libdiffuse, PyTorch under
each policy, ONNX Runtime, libdiffuse, ...), prints each side's median and
each ratio (> 1: libdiffuse is faster), and a last JSON line the parent
collects to print the summary, the two-thread scaling included.

libdiffuse: LIBDIFFUSE_PATH (default out/libdiffuse.so.1) at one thread,
LIBDIFFUSE_OMP_PATH (default out-omp/libdiffuse.so.1, `make OPENMP=1
O=out-omp`) at two.  A peer that is absent (torch, node or the npm package
in bench/ort: `cd bench/ort && npm install --ignore-scripts`) is skipped,
saying so.  Benchmarks, not tests: the figures depend on the machine and
its load.
"""
import ctypes
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736"}

vp = ctypes.c_void_p
P = ctypes.POINTER
f32p = P(ctypes.c_float)


def median(v):
    v = sorted(v)
    return v[len(v) // 2] if v else float("nan")


def load_lib(path):
    lib = ctypes.CDLL(path)
    sigs = {
        "diffuse_schedule_create_cosine": [P(vp), ctypes.c_size_t, ctypes.c_double,
                                           ctypes.c_double],
        "diffuse_timesteps_from_spec": [ctypes.c_size_t, ctypes.c_char_p, P(ctypes.c_int32),
                                        ctypes.c_size_t, P(ctypes.c_size_t)],
        "diffuse_schedule_respace": [P(vp), vp, P(ctypes.c_int32), ctypes.c_size_t],
        "diffuse_schedule_table": [vp, ctypes.c_int, P(ctypes.c_double), ctypes.c_size_t],
        "diffuse_net_create_mlp": [P(vp), ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t,
                                   ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_size_t,
                                   ctypes.c_uint64],
        "diffuse_net_create_unet": [P(vp), ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t,
                                    ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int,
                                    ctypes.c_int, ctypes.c_size_t, ctypes.c_uint64],
        "diffuse_net_set": [vp, ctypes.c_int, ctypes.c_double],
        "diffuse_net_model": [vp, ctypes.c_int, P(vp)],
        "diffuse_trainer_create": [P(vp), vp, vp, ctypes.c_size_t],
        "diffuse_trainer_set": [vp, ctypes.c_int, ctypes.c_double],
        "diffuse_trainer_step": [vp, f32p, ctypes.c_size_t, ctypes.c_uint64,
                                 P(ctypes.c_double)],
        "diffuse_sampler_create": [P(vp), vp, vp, ctypes.c_int, ctypes.c_size_t],
        "diffuse_sampler_set": [vp, ctypes.c_int, ctypes.c_double],
        "diffuse_sampler_run": [vp, f32p, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_size_t,
                                f32p],
    }
    for name, args in sigs.items():
        getattr(lib, name).argtypes = args
        getattr(lib, name).restype = ctypes.c_int
    lib.diffuse_last_error.restype = ctypes.c_char_p
    lib.diffuse_has_openmp.restype = ctypes.c_int
    lib.diffuse_version_string.restype = ctypes.c_char_p
    return lib


def ok(lib, rc):
    if rc != 0:
        raise RuntimeError(lib.diffuse_last_error().decode())


def cosine_abar(T):
    s = 0.008
    f = [math.cos((i / T + s) / (1 + s) * math.pi / 2) ** 2 for i in range(T + 1)]
    out, acc = [], 1.0
    for i in range(T):
        acc *= 1 - min(1 - f[i + 1] / f[i], 0.999)
        out.append(acc)
    return out


class Ours:
    """libdiffuse's trainer and DDIM sampler for a net made by make_net(lib)."""

    def __init__(self, lib, make_net, w, threads):
        self.lib, self.w = lib, w
        sched, fast, net, tr, model, smp = (vp() for _ in range(6))
        ok(lib, lib.diffuse_schedule_create_cosine(ctypes.byref(sched), w.T, 0.008, 0.999))
        keep = (ctypes.c_int32 * w.T)()
        n = ctypes.c_size_t()
        ok(lib, lib.diffuse_timesteps_from_spec(w.T, f"ddim{w.steps}".encode(), keep, w.T,
                                                ctypes.byref(n)))
        self.kept = list(keep)[: n.value]
        ok(lib, lib.diffuse_schedule_respace(ctypes.byref(fast), sched, keep, n.value))
        make_net(lib, ctypes.byref(net))
        ok(lib, lib.diffuse_net_set(net, 1, threads))
        ok(lib, lib.diffuse_trainer_create(ctypes.byref(tr), net, sched, w.train_batch))
        ok(lib, lib.diffuse_trainer_set(tr, 12, threads))
        ok(lib, lib.diffuse_net_model(net, 0, ctypes.byref(model)))
        ok(lib, lib.diffuse_sampler_create(ctypes.byref(smp), fast, model, 1, w.sample_batch))
        ok(lib, lib.diffuse_sampler_set(smp, 2, threads))
        self.handles = (sched, fast, net, tr, model, smp)
        self.tr, self.smp = tr, smp
        self.x0 = (ctypes.c_float * (w.train_batch * w.dim))()
        for i in range(len(self.x0)):
            self.x0[i] = math.sin(0.37 * i)
        self.out = (ctypes.c_float * (w.sample_batch * w.dim))()
        self.loss = ctypes.c_double()

    def train(self, r):
        ok(self.lib, self.lib.diffuse_trainer_step(self.tr, self.x0, self.w.train_batch, r,
                                                   ctypes.byref(self.loss)))

    def sample(self, r):
        ok(self.lib, self.lib.diffuse_sampler_run(self.smp, None, r, 0, self.w.sample_batch,
                                                  self.out))


def abar_kept(torch, w, kept):
    """The cosine schedule's alpha-bar as a tensor, and at the kept steps."""
    abar = torch.tensor(cosine_abar(w.T), dtype=torch.float32)
    return abar, abar[torch.tensor(kept, dtype=torch.long)]


def torch_sides(torch, model, w, kept):
    """PyTorch's training step (Adam, MSE on eps) and DDIM loop."""
    abar, abar_k = abar_kept(torch, w, kept)
    kept_t = torch.tensor(kept, dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x0 = torch.sin(0.37 * torch.arange(w.train_batch * w.dim, dtype=torch.float32)).reshape(
        w.train_batch, *w.shape)

    def train(r):
        t = torch.randint(0, w.T, (w.train_batch,))
        eps = torch.randn_like(x0)
        a = abar[t].reshape(-1, *([1] * len(w.shape)))
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model(xt, t), eps)
        loss.backward()
        opt.step()

    def sample(r):
        with torch.no_grad():
            x = torch.randn(w.sample_batch, *w.shape)
            for i in range(len(kept) - 1, -1, -1):
                a = abar_k[i]
                ap = abar_k[i - 1] if i > 0 else torch.tensor(1.0)
                eps = model(x, kept_t[i].expand(w.sample_batch))
                x0p = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
                eps = (x - a.sqrt() * x0p) / (1 - a).sqrt()
                x = ap.sqrt() * x0p + (1 - ap).sqrt() * eps
        return x

    return train, sample


def torch_worker(w, threads, kept):
    """The PyTorch side in a process of its own: reads "train R" or "sample R"
    lines on stdin and answers each with a JSON line of the seconds taken
    (a training step: the mean over w.train_reps steps)."""
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        print(json.dumps({"skip": "torch is not installed"}), flush=True)
        return
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    train, sample = torch_sides(torch, w.torch_model(torch), w, kept)
    print(json.dumps({"version": torch.__version__, "threads": torch.get_num_threads()}),
          flush=True)
    for line in sys.stdin:
        kind, r = line.split()
        r = int(r)
        t0 = time.perf_counter()
        if kind == "train":
            for i in range(w.train_reps):
                train(r * 100 + i + 1)
            dt = (time.perf_counter() - t0) / w.train_reps
        else:
            sample(r)
            dt = time.perf_counter() - t0
        print(json.dumps({"seconds": dt}), flush=True)


class TorchProcess:
    """Client of one torch_worker process run under one OpenMP wait policy
    (None: libgomp's default)."""

    def __init__(self, threads, kept, policy):
        env = dict(os.environ)
        env.pop("OMP_WAIT_POLICY", None)
        if policy is not None:
            env["OMP_WAIT_POLICY"] = policy
        self.label = f"OMP_WAIT_POLICY={policy or 'default'}"
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(sys.argv[0]), "--torch-worker", str(threads),
             json.dumps(kept)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True)
        self.hello = self._reply()

    def _reply(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the PyTorch worker ({self.label}) exited")
        return json.loads(line)

    def run(self, kind, r):
        self.proc.stdin.write(f"{kind} {r}\n")
        self.proc.stdin.flush()
        return self._reply()["seconds"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def ort_side(torch, model, w, kept, abar_k, threads, tmp):
    """A function running one timed ONNX Runtime DDIM run (seconds), or a
    reason string when the peer is absent."""
    node = shutil.which("node")
    if node is None:
        return "node is not installed (apt-get install nodejs)"
    if not os.path.isdir(os.path.join(HERE, "ort", "node_modules", "onnxruntime-node")):
        return "onnxruntime-node is not installed: cd bench/ort && npm install --ignore-scripts"
    path = os.path.join(tmp, "model.onnx")
    x = torch.zeros(w.sample_batch, *w.shape)
    t = torch.zeros(w.sample_batch, dtype=torch.long)
    try:
        with torch.no_grad():
            torch.onnx.export(model, (x, t), path, input_names=["x", "t"],
                              output_names=["eps"], opset_version=13)
    except Exception as e:  # noqa: BLE001 - any export failure skips the peer
        return f"torch.onnx.export failed: {e}"
    cfg = os.path.join(tmp, "ort.json")
    with open(cfg, "w") as f:
        json.dump({"model": path, "batch": w.sample_batch, "shape": list(w.shape),
                   "abar": [float(a) for a in abar_k], "t": list(kept), "threads": threads,
                   "reps": 1}, f)

    def run():
        out = subprocess.run([node, os.path.join(HERE, "ort", "ort_ddim.js"), cfg],
                             capture_output=True, text=True, check=False)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            raise RuntimeError(f"ort_ddim.js printed nothing: {out.stderr[-500:]}")
        res = json.loads(lines[-1])
        if "skip" in res:
            raise RuntimeError(res["skip"])
        run.version = res["version"]
        return res["seconds"][0]

    try:
        run()
    except RuntimeError as e:
        return str(e)
    return run


def child(w, threads):
    w.rounds = int(os.environ.get("BENCH_ROUNDS", w.rounds))
    path = os.environ.get("LIBDIFFUSE_OMP_PATH" if threads > 1 else "LIBDIFFUSE_PATH",
                          os.path.join(ROOT, "out-omp" if threads > 1 else "out",
                                       "libdiffuse.so.1"))
    lib = load_lib(path)
    if threads > 1 and not lib.diffuse_has_openmp():
        print(f"threads {threads}: libdiffuse at {path} has no OpenMP: skipped "
              "(make OPENMP=1 O=out-omp)")
        print(json.dumps({"threads": threads}))
        return
    print(f"threads {threads}: libdiffuse {lib.diffuse_version_string().decode()} ({path}, "
          f"OpenMP {bool(lib.diffuse_has_openmp())}), NUM_THREADS {threads}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}, "
          f"MALLOC_MMAP_MAX_={os.environ.get('MALLOC_MMAP_MAX_')}, "
          f"MALLOC_TRIM_THRESHOLD_={os.environ.get('MALLOC_TRIM_THRESHOLD_')}")
    ours = Ours(lib, w.make_net, w, threads)
    sides = {"libdiffuse": (ours.train, ours.sample)}
    workers = []
    tmp = tempfile.mkdtemp(prefix="diffuse-bench-")
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        torch = None
        print(f"threads {threads}: PyTorch skipped: torch is not installed "
              "(apt-get install python3-torch)")
    ort_run = None
    if torch is not None:
        for policy in (None,) if threads == 1 else (None, "PASSIVE"):
            tp = TorchProcess(threads, ours.kept, policy)
            workers.append(tp)
            if "skip" in tp.hello:
                print(f"threads {threads}: PyTorch ({tp.label}) skipped: {tp.hello['skip']}")
                continue
            sides[f"torch {tp.label}"] = (lambda r, tp=tp: tp.run("train", r),
                                          lambda r, tp=tp: tp.run("sample", r))
            print(f"threads {threads}: torch {tp.hello['version']} ({tp.label}, a process of "
                  f"its own), torch.get_num_threads() = {tp.hello['threads']}")
        # the ONNX model: exported from the same module, built here with the same seed
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        model = w.torch_model(torch)
        abar_k = abar_kept(torch, w, ours.kept)[1]
        ort_run = ort_side(torch, model, w, ours.kept, abar_k, threads, tmp)
        if isinstance(ort_run, str):
            print(f"threads {threads}: ONNX Runtime skipped: {ort_run}")
            ort_run = None
        else:
            print(f"threads {threads}: onnxruntime-node {ort_run.version}, "
                  f"intraOpNumThreads {threads}")
    else:
        print(f"threads {threads}: ONNX Runtime skipped: it needs torch to export the model")
    # warm-up
    for name, (tr, sa) in sides.items():
        tr(0)
        sa(0)
    times = {(s, k): [] for s in sides for k in ("train", "sample")}
    if ort_run is not None:
        times[("onnxruntime", "sample")] = []
    for r in range(w.rounds):
        for name, (tr, sa) in sides.items():
            if name == "libdiffuse":
                t0 = time.perf_counter()
                for i in range(w.train_reps):
                    tr(r * 100 + i + 1)
                times[(name, "train")].append((time.perf_counter() - t0) / w.train_reps)
                t0 = time.perf_counter()
                sa(r + 1)
                times[(name, "sample")].append(time.perf_counter() - t0)
            else:  # timed inside the worker
                times[(name, "train")].append(tr(r + 1))
                times[(name, "sample")].append(sa(r + 1))
        if ort_run is not None:
            times[("onnxruntime", "sample")].append(ort_run())
    for tp in workers:
        tp.close()
    result = {"threads": threads}
    for (name, kind), v in sorted(times.items()):
        rate = (1 if kind == "train" else w.sample_batch) / median(v)
        unit = "steps/s" if kind == "train" else f"{w.unit}/s"
        print(f"threads {threads}: {kind:6s} {name:32s} {rate:10.{1 if rate >= 10 else 3}f} {unit} "
              f"(median of {len(v)} rounds)")
        if not name.startswith("torch "):
            result[f"{name}_{kind}"] = rate
    for kind in ("train", "sample"):
        # PyTorch at its best: the policy with the least median time
        tnames = [s for s in sides if s.startswith("torch ")]
        if tnames:
            best = min(tnames, key=lambda s: median(times[(s, kind)]))
            times[("torch", kind)] = times[(best, kind)]
            result[f"torch_{kind}"] = (1 if kind == "train" else w.sample_batch) / median(
                times[(best, kind)])
            print(f"threads {threads}: {kind:6s} PyTorch at its best: {best[6:]}")
        for peer in ("torch", "onnxruntime"):
            if (peer, kind) in times:
                ratios = [b / a for a, b in zip(times[("libdiffuse", kind)], times[(peer, kind)])]
                result[f"ratio_{peer}_{kind}"] = median(ratios)
                print(f"threads {threads}: {kind:6s} libdiffuse / {peer}: {median(ratios):.2f}x "
                      "(median of per-round ratios)")
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


def main(w):
    if len(sys.argv) > 3 and sys.argv[1] == "--torch-worker":
        torch_worker(w, int(sys.argv[2]), json.loads(sys.argv[3]))
        return
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(w, int(sys.argv[2]))
        return
    counts = [int(a) for a in sys.argv[1:]] or [1, 2]
    rounds = os.environ.get("BENCH_ROUNDS", w.rounds)
    print(f"{w.title}; {rounds} alternating rounds per thread count (BENCH_ROUNDS)")
    results = {}
    for n in counts:
        env = dict(os.environ)
        for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
            env.pop(k, None)
        env.update(MALLOC_ENV)
        env["OMP_NUM_THREADS"] = str(n)
        env["OPENBLAS_NUM_THREADS"] = str(n)
        out = subprocess.run([sys.executable, os.path.abspath(sys.argv[0]), "--child", str(n)],
                             env=env, capture_output=True, text=True, check=False)
        lines = out.stdout.splitlines()
        for ln in lines:
            if not ln.startswith("{"):
                print(ln)
        if out.returncode != 0:
            print(out.stderr[-2000:])
            sys.exit(out.returncode)
        results[n] = json.loads([ln for ln in lines if ln.startswith("{")][-1])
    print("summary (ratios > 1: libdiffuse is faster):")
    for n, r in results.items():
        parts = [f"{k[6:]} {v:.2f}x" for k, v in r.items() if k.startswith("ratio_")]
        print(f"  {n} thread(s): " + (", ".join(parts) if parts else "no peer"))
    if 1 in results and 2 in results:
        for kind in ("train", "sample"):
            a, b = results[1].get(f"libdiffuse_{kind}"), results[2].get(f"libdiffuse_{kind}")
            if a and b:
                print(f"  libdiffuse {kind}: 2 threads / 1 thread = {b / a:.2f}x")
